# Edits not yet applied by sync, counted on the rows whose sync applies them (models.drift).

from django.db import migrations, models


def pending_changes():
    return models.PositiveIntegerField(
        default=0,
        editable=False,
        help_text=(
            "Edits made since the last successful sync that change what sync writes to AWS "
            "(this row's own fields, its rules or subscriptions)."
        ),
        verbose_name="changes pending",
    )


class Migration(migrations.Migration):

    dependencies = [
        ('s3tasks', '0004_permissions_labels_drop_binding_options'),
    ]

    operations = [
        migrations.AddField(model_name='bucket', name='pending_changes', field=pending_changes()),
        migrations.AddField(model_name='queue', name='pending_changes', field=pending_changes()),
        migrations.AddField(model_name='topic', name='pending_changes', field=pending_changes()),
    ]
