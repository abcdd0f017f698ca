"""The Django app of the django-fsm-2 peer: its models and their migration."""
