"""The fault campaign (issue 11): workers, brokers and databases failing under real load."""
