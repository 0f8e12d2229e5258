"""The viewer's page and static files through Flask's test client (no server: the fast
tier). That a browser runs them is ``test_viewer_browser.py``'s part."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_pine_ws import FlaskPineWS

STATIC = Path(__file__).resolve().parent.parent / "flask_pine_ws" / "static"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FlaskClient]:
    (tmp_path / "app.log").write_text("x\n")
    app = Flask(__name__)
    pine = FlaskPineWS(app)
    app.register_blueprint(pine.viewer({"app": tmp_path / "app.log"}), url_prefix="/logs")
    with app.test_client() as test_client:
        yield test_client


@pytest.mark.parametrize(("name", "mimetype"), [("viewer.js", "text/javascript"),
                                                ("viewer.css", "text/css")])
def test_static_files_are_the_packages_own(client: FlaskClient, name: str,
                                           mimetype: str) -> None:
    response = client.get(f"/logs/_static/{name}")
    try:
        assert response.status_code == 200
        assert response.mimetype == mimetype
        assert response.get_data() == (STATIC / name).read_bytes()
    finally:
        response.close()


def test_the_page_links_the_static_files_and_nothing_outside(client: FlaskClient) -> None:
    response = client.get("/logs/app")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    for name in ("viewer.js", "viewer.css"):
        assert f'"/logs/_static/{name}"' in page
    assert "{{" not in page and "https://" not in page and "cdn" not in page.lower()


@pytest.mark.parametrize("path", [
    "/logs/_static/nope.js",
    "/logs/_static/../viewer.py",
    "/logs/_static/%2e%2e/viewer.py",
    "/logs/_static/..%2fviewer.py",
    "/logs/_static/viewer.html/x",
])
def test_nothing_else_is_served_from_the_package(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    try:
        assert response.status_code == 404, path
    finally:
        response.close()
