"""Where the demo handlers put what they read from S3."""

from django.db import models


class ImportedFile(models.Model):
    bucket = models.CharField(max_length=63)
    key = models.TextField()
    rows = models.PositiveIntegerField(default=0)
    imported_at = models.DateTimeField(auto_now=True)
    removed = models.BooleanField(default=False)
    summary_key = models.CharField(
        max_length=1024, blank=True, help_text="Key of the summary report in the reports bucket."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bucket", "key"], name="demo_unique_imported_file")
        ]
        # Uploading through the demo page hands out a presigned POST to the upload bucket:
        # a right of its own, not something staff status or a view permission implies.
        permissions = [("upload_csv", "Can upload CSV files through the demo page")]

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key} ({self.rows} rows)"


class ImportedRow(models.Model):
    file = models.ForeignKey(ImportedFile, on_delete=models.CASCADE, related_name="row_set")
    line = models.PositiveIntegerField()
    data = models.JSONField()

    def __str__(self) -> str:
        return f"{self.file} line {self.line}"
