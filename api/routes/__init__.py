"""The service's routes, one module per resource; each has ``routes(service)``."""
