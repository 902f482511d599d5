"""A Flask app with the flask_badgr extension, served by gunicorn (the Flask/gunicorn row)."""

from __future__ import annotations

from bench_config import bench_config
from flask import Flask

from flask_badgr import Badgr

app = Flask(__name__)
app.config["BADGR"] = bench_config()
Badgr(app)
