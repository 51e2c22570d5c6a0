FROM python:3.11-slim
WORKDIR /srv
# LightGBM (the trainer's gbdt family) links OpenMP's runtime, which the slim image lacks.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml ./
COPY app ./app
COPY topics ./topics
COPY proto ./proto
RUN pip install --no-cache-dir .
ENV DATA_DIR=/var/lib/fraud WEB_BIND=0.0.0.0 WEB_PORT=6066 GRPC_PORT=6067
EXPOSE 6066 6067 6068
CMD ["python", "-m", "app"]
