# qrsys: a multi-stage image. The builder makes a wheel; the runtime image
# installs it into a virtualenv and runs as an unprivileged user.

FROM python:3.11-slim AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY qrsys_grpc ./qrsys_grpc
COPY migrations ./migrations
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
RUN useradd --system --uid 10001 --create-home --home-dir /home/qrsys qrsys
COPY --from=builder /wheels /wheels
RUN python -m venv /opt/qrsys \
    && /opt/qrsys/bin/pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels
ENV PATH=/opt/qrsys/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    QRSYS_LISTEN_ADDRESS=0.0.0.0:50051 \
    QRSYS_DATA_DIR=/home/qrsys/data
USER qrsys
WORKDIR /home/qrsys
EXPOSE 50051
# Set QRSYS_DATABASE_URL and QRSYS_JWT_SECRET (or QRSYS_JWT_SECRET_FILE);
# run `qrsys-server --migrate-only` once per release before the servers.
ENTRYPOINT ["qrsys-server"]
