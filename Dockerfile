# logout-orchestrator: `docker run IMAGE` starts a worker; any other subcommand works too,
# e.g. `docker run IMAGE serve`, `docker run IMAGE db upgrade` or `docker run -i IMAGE publish -`.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The process runs unprivileged; the code is installed by root so it cannot rewrite itself.
RUN useradd --create-home --uid 10001 --user-group logout

WORKDIR /src
# Dependencies first, in a layer of their own: it is rebuilt only when pyproject.toml changes,
# not on every change of the source. (Empty packages let the project's metadata resolve; the
# placeholder install is removed once its dependencies are in.)
COPY pyproject.toml README.md LICENSE ./
RUN for package in schemas orchestrator protocols workers api; do \
        mkdir -p "$package" && touch "$package/__init__.py"; \
    done \
    && pip install --no-cache-dir --only-binary lxml,xmlsec '.[api]' \
    && pip uninstall --yes logout-orchestrator \
    && rm -rf schemas orchestrator protocols workers api build

# Then the source: only the packages (.dockerignore keeps tests, benchmarks and the rest out).
COPY schemas schemas
COPY orchestrator orchestrator
COPY protocols protocols
COPY workers workers
COPY api api
RUN pip install --no-cache-dir --no-deps '.[api]' \
    && logout-orchestrator --help >/dev/null

# Generated signing keys and the embedded database live here; mount a shared volume so every
# worker signs with the same key (or point LOGOUT_OIDC_KEY_FILES at managed keys).
RUN mkdir -p /var/lib/logout-orchestrator && chown logout:logout /var/lib/logout-orchestrator
ENV LOGOUT_DATA_DIR=/var/lib/logout-orchestrator

USER logout
WORKDIR /home/logout

EXPOSE 8080 9100
ENTRYPOINT ["logout-orchestrator"]
CMD ["worker"]
