# syntax=docker/dockerfile:1
# chatterd in a container: a wheel built in one stage, installed into a venv in a slim Python
# 3.11 runtime that holds nothing else (no compiler, no source, no pip).
#
#   docker build -t chatterd .                  # or: podman build --format docker -t chatterd .
#   docker network create chatter
#   docker run -d --name n1 --network chatter -e CHATTER_ENCRYPT_KEY -v n1:/var/lib/chatterd chatterd
#   docker run -d --name n2 --network chatter -e CHATTER_ENCRYPT_KEY -v n2:/var/lib/chatterd chatterd \
#       --config /etc/chatterd/chatterd.toml --join n1:2428
#   docker exec n1 chatterd members
#
# The options come from /etc/chatterd/chatterd.toml (deploy/container.toml: every interface,
# the data dir, JSON logs): mount your own over it, or give options after the image name
# (they win over the file; start them with --config /etc/chatterd/chatterd.toml to keep it).
# On a host network, publish UDP and TCP 2428 (-p 2428:2428/udp -p 2428:2428/tcp) and give
# --advertise HOST_IP:2428, the address the other hosts reach.
#
# PID 1 is tini, which forwards SIGTERM/SIGINT to chatterd (a graceful leave: `docker stop`
# takes ~0.1 s and the exit status is chatterd's, 0) and reaps orphans. chatterd alone as PID 1
# handles the signals too and waits for the handlers and checks it starts, but a process that
# a handler leaves in the background (`cmd &`, nohup) is re-parented to PID 1 when the handler
# exits, and chatterd never waits for it: each one stayed a zombie (tests/e2e/test_container.py
# checks that none does now).
#
# PYTHON_IMAGE: any Debian-based image with python3 (3.11+) and its venv module, the same for
# both stages (the venv links to its python3). The CI test builds on a local Debian bookworm.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY chatterd ./chatterd
COPY chatter_inject ./chatter_inject
# The wheels of chatter and of every dependency, then a venv from those wheels alone.
RUN python3 -m venv /opt/chatterd \
    && /opt/chatterd/bin/python -m pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels . \
    && /opt/chatterd/bin/python -m pip install --no-cache-dir --disable-pip-version-check --no-index \
        --find-links /wheels chatter \
    && /opt/chatterd/bin/python -m pip uninstall --yes --disable-pip-version-check pip setuptools \
    && /opt/chatterd/bin/chatterd --help > /dev/null

FROM ${PYTHON_IMAGE}
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/chatterd /opt/chatterd
COPY deploy/container.toml /etc/chatterd/chatterd.toml
# A non-root user whose home is the state dir (node.json, http-token, keyring: mode 0600).
RUN groupadd --system --gid 2428 chatterd \
    && useradd --system --uid 2428 --gid 2428 --home-dir /var/lib/chatterd --shell /usr/sbin/nologin chatterd \
    && install -d -o chatterd -g chatterd -m 0700 /var/lib/chatterd
ENV PATH=/opt/chatterd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 2428:2428
WORKDIR /var/lib/chatterd
# Gossip is UDP, the HTTP API (health, metrics, the operator commands) TCP, both on 2428.
EXPOSE 2428/udp 2428/tcp
# Healthy while /v1/health answers 200 (503: leaving, not yet joined, isolated, check failing...).
# Python's own http.client: the image needs no curl. $CHATTER_HTTP_ADDR if the API moved.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import http.client as h, os, sys; host, _, port = os.environ.get('CHATTER_HTTP_ADDR', '127.0.0.1:2428').rpartition(':'); c = h.HTTPConnection(host, int(port), timeout=4); c.request('GET', '/v1/health'); sys.exit(c.getresponse().status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "chatterd"]
CMD ["--config", "/etc/chatterd/chatterd.toml"]
