# The final stage as a container image: several uvicorn workers behind one port, one /metrics.
#
#   docker build -t inference-server:1.0.0 .                       # trains the model (~20 s)
#   docker build --build-arg TRAIN_MODEL=0 -t inference-server:1.0.0 .   # no model inside:
#   docker run -p 8000:8000 -v "$PWD/models:/app/models:ro" inference-server:1.0.0
#
# The command is the launcher `python3 tasks.py serve` runs (serving/serve.py), with the same
# connection limits (serving/protocol.py), as PID 1: SIGTERM drains every worker and it exits 0
# (3 if a worker cannot load the model). tests/e2e/test_workers.py and test_deploy.py run this
# exact command line, taken from this file.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A user without a login and without write access to the code.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app

WORKDIR /app

# Dependencies in their own layer: rebuilt only when the pins change, not with every code edit.
# requirements.txt pins every version; pip takes no extras in a constraints file, hence the sed.
COPY requirements.txt deploy/requirements-serve.txt ./
RUN sed 's/\[[a-z,]*\]//' requirements.txt > constraints.txt \
    && pip install -c constraints.txt -r requirements-serve.txt

COPY sentiment_model/ sentiment_model/
COPY serving/ serving/
COPY inference_server.py ./

# The model: trained at build time from the data package (the default), or mounted at run
# time on /app/models (build with TRAIN_MODEL=0; or set INFERENCE_MODEL_DIR to any directory).
ARG TRAIN_MODEL=1
RUN mkdir -p models logs /tmp/metrics \
    && if [ "$TRAIN_MODEL" = "1" ]; then python -m sentiment_model.train --if-missing; fi \
    && chown -R app:app logs /tmp/metrics

USER 10001:10001

# Two workers by default (the launcher reads WEB_CONCURRENCY, as uvicorn does); a Kubernetes
# pod may set one per CPU. The metrics directory is emptied at start, its files removed at exit.
ENV WEB_CONCURRENCY=2 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/metrics \
    INFERENCE_LOG_PATH=/app/logs/requests.log

EXPOSE 8000

# No curl in a slim image: ask /health with the Python that is there. With several workers
# nothing accepts connections until the first worker has loaded the model: the start period.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status != 200)"]

# Exec form: no shell in between, so SIGTERM goes to the server itself.
ENTRYPOINT ["python", "-m", "serving.serve"]
CMD ["inference_server:app", "--host", "0.0.0.0", "--port", "8000"]
