# syntax=docker/dockerfile:1
# Stopbot: the Slack bot, as a small non-root image.
#   docker build -t stopbot .
#   docker run -v stopbot-data:/data -v ./stopbot.yaml:/app/stopbot.yaml:ro \
#     -e SLACK_BOT_TOKEN -e SLACK_APP_TOKEN -e QOVERY_API_TOKEN stopbot
# Build stage: the project and every dependency as wheels, so the runtime image needs
# no compiler and installs offline from them.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY providers ./providers
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STOPBOT_DB=/data/stopbot.db
RUN groupadd --system --gid 10001 stopbot \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --create-home stopbot \
    && mkdir /data \
    && chown 10001:10001 /data
# The wheels are mounted from the build stage, not copied: no layer keeps them.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels /wheels/stopbot-*.whl
USER 10001:10001
WORKDIR /app
# The SQLite database (operations in flight, audit log, locks) outlives the container.
VOLUME /data
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["stopbot"]
CMD ["serve", "--host", "0.0.0.0", "--port", "3000"]
