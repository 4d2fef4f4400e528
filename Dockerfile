# logout-orchestrator: `docker run IMAGE` starts a worker; any other subcommand works too,
# e.g. `docker run IMAGE db upgrade` or `docker run -i IMAGE publish -`.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The process runs unprivileged; the code is installed by root so it cannot rewrite itself.
RUN useradd --create-home --uid 10001 --user-group logout

WORKDIR /src
COPY . .
RUN pip install --no-cache-dir --only-binary lxml,xmlsec . \
    && logout-orchestrator --help >/dev/null

# Generated signing keys and the embedded database live here; mount a shared volume so every
# worker signs with the same key (or point LOGOUT_OIDC_KEY_FILES at managed keys).
RUN mkdir -p /var/lib/logout-orchestrator && chown logout:logout /var/lib/logout-orchestrator
ENV LOGOUT_DATA_DIR=/var/lib/logout-orchestrator

USER logout
WORKDIR /home/logout

ENTRYPOINT ["logout-orchestrator"]
CMD ["worker"]
