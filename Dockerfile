FROM python:3.11-slim
WORKDIR /srv
COPY pyproject.toml ./
COPY app ./app
COPY topics ./topics
RUN pip install --no-cache-dir .
ENV DATA_DIR=/var/lib/fraud WEB_BIND=0.0.0.0 WEB_PORT=6066
EXPOSE 6066
CMD ["python", "-m", "app"]
