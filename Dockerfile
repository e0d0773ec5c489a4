# Lambda container image running s3tasks handlers (see docs/lambda.md).
#   docker build -t s3tasks-lambda .
# The AWS base image brings the Lambda runtime interface client; CMD names the handler.
FROM public.ecr.aws/lambda/python:3.11

WORKDIR ${LAMBDA_TASK_ROOT}
COPY pyproject.toml README.md ./
COPY s3tasks ./s3tasks
COPY project ./project
# psycopg for the PostgreSQL database Lambda needs (SQLite cannot be shared by functions).
RUN pip install --no-cache-dir ".[postgres]" && rm -rf build *.egg-info

# Your own settings module in a real deployment; the example project reads env vars.
ENV DJANGO_SETTINGS_MODULE=project.settings \
    S3TASKS_DB=postgres \
    DJANGO_DEBUG=0

CMD ["s3tasks.lambda_handler.handler"]
