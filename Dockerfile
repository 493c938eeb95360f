# The proxy (M6 API) for Cloud Run. Not built in CI here (no container runtime); the
# image only runs `uvicorn proxy.app:create_app`, so it needs no ffmpeg or NAS mount.
#
#   docker build -t clipping-proxy .
#   gcloud run deploy clipping-proxy --image ... --port 8080 \
#     --set-env-vars PREFECT_API_URL=https://prefect.internal/api,CLIPPING_GCP_PROJECT=gg-poker,\
#   CLIPPING_PROXY_DATABASE_URL=postgresql+psycopg://proxy@10.0.0.5/clipping_proxy \
#     --set-secrets CLIPPING_PROXY_API_KEYS_FILE=/secrets/api-keys:clipping-api-keys:latest,\
#   PREFECT_API_AUTH_STRING=prefect-auth-string:latest
#
# Other settings: CLIPPING_PROXY_* (proxy/settings.py) and CLIPPING_* (clipping/settings.py);
# Pub/Sub is reached with the service's own identity (Application Default Credentials).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY clipping ./clipping
COPY cutting ./cutting
COPY flows ./flows
COPY blocks ./blocks
COPY deployments ./deployments
COPY agent_pool ./agent_pool
COPY proxy ./proxy
COPY clipctl ./clipctl
# The proxy's extra only: no PyAV, no ffmpeg binary, no prefect-gcp.
RUN pip install ".[proxy]" && useradd --system --no-create-home proxy
USER proxy

# Cloud Run sets PORT (8080 unless configured otherwise).
CMD ["sh", "-c", "exec uvicorn proxy.app:create_app --factory --host 0.0.0.0 --port ${PORT:-8080} --proxy-headers --forwarded-allow-ips='*'"]
