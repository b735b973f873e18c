"""The hub's web dashboard (Starlette + Jinja2): fleet, station, detections, alerts, users.

Served by ``fieldstation hub run`` on the HTTP ingest's listener (see
:func:`fieldstation.hub.http.create_app`). Log-in required on every page; roles
(:data:`fieldstation.hub.models.ROLES`) enforced per route.
"""

from fieldstation.hub.web.app import Dashboard, dashboard_routes, session_secret

__all__ = ["Dashboard", "dashboard_routes", "session_secret"]
