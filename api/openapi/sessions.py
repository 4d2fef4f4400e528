"""The paths of sessions and their users (:mod:`api.routes.sessions`,
:mod:`api.routes.users`): what a login and an RP report, the self-service page's listing and
revocation, and the login stage's remember-device question."""

from __future__ import annotations

from typing import Any, Final

from api.openapi.parts import BODY_ERRORS, json_answer, json_body, operation, path_param, ref

__all__ = ["session_paths", "user_paths"]

_IDENTIFIER: Final = {"type": "string", "minLength": 1, "maxLength": 255}


def session_paths() -> dict[str, Any]:
    session_id = path_param("session_id", _IDENTIFIER)
    return {
        "/v1/sessions": {
            "post": operation(
                "A login started a session (a session.started event)",
                "sessions:write",
                {"201": json_answer(ref("SessionAnswer"), "recorded")},
                body=json_body("SessionStarted"),
                errors=BODY_ERRORS,
            )
        },
        "/v1/sessions/{session_id}/seen": {
            "post": operation(
                "The session was seen (activity)",
                "sessions:write",
                {"200": json_answer(ref("SeenAnswer"), "recorded")},
                body=json_body("Seen", required=False),
                parameters=[session_id],
                errors=(404, *BODY_ERRORS),
            )
        },
        "/v1/sessions/{session_id}/binding-check": {
            "post": operation(
                "Judge a request's address against the session's binding",
                "sessions:write",
                {"200": json_answer(ref("BindingVerdict"), "the verdict")},
                body=json_body("BindingCheck"),
                parameters=[session_id],
                errors=(404, *BODY_ERRORS, 503),
            )
        },
    }


def user_paths() -> dict[str, Any]:
    user_id = path_param("user_id", _IDENTIFIER)
    return {
        "/v1/users/{user_id}/sessions": {
            "get": operation(
                "The user's open sessions, newest first (a self-service sessions page)",
                "read",
                {"200": json_answer(ref("UserSessions"), "the sessions")},
                parameters=[user_id],
                errors=(422,),
            )
        },
        "/v1/users/{user_id}/sessions/{session_id}": {
            "delete": operation(
                "The user ends one of their sessions (session.revoke, initiator user)",
                "events:write",
                {"202": json_answer(ref("RevokeAnswer"), "accepted: the logout follows")},
                parameters=[user_id, path_param("session_id", _IDENTIFIER)],
                errors=(404, 422),
            )
        },
        "/v1/users/{user_id}/device-check": {
            "post": operation(
                "Whether a login about to complete comes from a known device (read-only)",
                "sessions:write",
                {"200": json_answer(ref("DeviceAnswer"), "the verdict")},
                body=json_body("DeviceQuestion"),
                parameters=[user_id],
                errors=BODY_ERRORS,
            )
        },
    }
