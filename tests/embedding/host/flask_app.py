"""The host's Flask application: Flask-SQLAlchemy on the host's own ``models.Base``."""

from __future__ import annotations

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from models import Base

db = SQLAlchemy(model_class=Base)


def create_app(database_url: str) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    db.init_app(app)
    return app
