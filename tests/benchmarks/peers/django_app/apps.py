from django.apps import AppConfig


class ApplicationsConfig(AppConfig):
    name = "tests.benchmarks.peers.django_app"
    label = "applications"
    default_auto_field = "django.db.models.BigAutoField"
