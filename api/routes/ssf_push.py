"""``POST /v1/ssf/push/{stream}``: Security Event Tokens pushed by an upstream Shared
Signals transmitter (RFC 8935), one stream per entry of ``ssf_transmitters``.

Answers as RFC 8935 says: ``202`` with an empty body once the SET is verified and what it
asks is published; ``400`` with ``{"err", "description"}`` when the SET is refused
(``invalid_request``, ``invalid_key``, ``invalid_issuer``, ``invalid_audience``); ``401``
``authentication_failed`` when the stream wants a bearer token and the request lacks the
right one; ``403`` ``access_denied`` when the stream is disabled. An unknown stream is a
``404`` problem. A replayed SET (a jti received before) is ``400`` ``invalid_request`` and
nothing is done again. The token is never logged.
"""

from __future__ import annotations

import hmac
import time
from functools import partial
from typing import Final

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.problems import ApiProblem, clip
from api.service import Service
from orchestrator.api_tokens import hash_token
from orchestrator.egress import EgressPolicy
from orchestrator.metrics import count_ssf_set
from orchestrator.request_body import media_type, read_body
from orchestrator.ssf_intake import ReceivedSet, SetIntake
from orchestrator.ssf_keys import TransmitterKeys, fetch_jwks
from orchestrator.ssf_transmitters import SsfTransmitter
from protocols.ssf.receiving import SET_MEDIA_TYPE, SetRefusedError, read_header, verify
from protocols.ssf.signals import read_signals

__all__ = ["routes"]

_log = structlog.get_logger("logout.api")
_STATUS: Final = {"authentication_failed": 401, "access_denied": 403}
_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="logout-orchestrator ssf"'}


def routes(service: Service) -> list[Route]:
    settings = service.settings
    transmitters = {t.name: t for t in settings.ssf_transmitters}
    fetch = partial(
        fetch_jwks,
        egress=EgressPolicy.from_entries(settings.egress_allow),
        timeout=settings.delivery_timeout,
        body_limit=settings.response_body_limit,
    )
    keys = {name: TransmitterKeys(t, fetch) for name, t in transmitters.items()}
    intake = SetIntake(service.runtime.database, service.publisher)
    issuer = settings.issuer

    async def push(request: Request) -> Response:
        stream = request.path_params["stream"]
        transmitter = transmitters.get(stream)
        if transmitter is None:
            raise ApiProblem(
                404, "unknown stream", "no such stream; configure it in ssf_transmitters"
            )
        try:
            _admit(request, transmitter)
            token = (await read_body(request, settings.api_body_limit)).decode("ascii").strip()
            header = read_header(token, transmitter.algorithms)
            key = await keys[stream].key(header.kid)
            if key is None:
                raise SetRefusedError(
                    "invalid_key", "the SET's kid is not in the transmitter's JWKS"
                )
            now = time.time()
            claims = verify(
                token,
                key,
                header,
                issuer=transmitter.issuer,
                audience=transmitter.audience,
                max_age=transmitter.max_age,
                now=now,
            )
            signals = read_signals(
                claims,
                issuers={issuer, transmitter.issuer},
                email_is_user_id=transmitter.email_is_user_id,
                now=now,
            )
            received = ReceivedSet(
                stream, transmitter.issuer, claims["jti"], claims["iat"], signals
            )
            effects = await service.run(lambda: intake.accept(received, transmitter.max_age))
        except UnicodeDecodeError:
            return _refused(stream, SetRefusedError("invalid_request", "the body is not a JWS"))
        except SetRefusedError as exc:
            return _refused(stream, exc)
        acted = any(effect.get("event_id") for effect in effects)
        count_ssf_set(stream, "accepted" if acted else "ignored")
        return Response(status_code=202)

    return [Route("/v1/ssf/push/{stream}", push, methods=["POST"], name="ssf_push")]


def _admit(request: Request, transmitter: SsfTransmitter) -> None:
    """The stream takes this request: enabled, with its bearer token when it has one, and a
    SET's media type."""
    expected = transmitter.push_token_sha256
    if expected is not None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = hash_token(token.strip()) if scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(given, expected):
            raise SetRefusedError(
                "authentication_failed",
                "send Authorization: Bearer <the stream's push token> (push_token_sha256)",
            )
    if not transmitter.enabled:
        raise SetRefusedError("access_denied", "this stream is disabled (enabled = false)")
    if media_type(request) != SET_MEDIA_TYPE:
        raise SetRefusedError("invalid_request", f"send Content-Type: {SET_MEDIA_TYPE} (RFC 8935)")


def _refused(stream: str, exc: SetRefusedError) -> JSONResponse:
    status = _STATUS.get(exc.err, 400)
    count_ssf_set(stream, exc.err)
    _log.info("ssf set refused", stream=stream, err=exc.err, description=exc.description)
    headers = _CHALLENGE if status == 401 else None
    answer = {"err": exc.err, "description": clip(exc.description)}
    return JSONResponse(answer, status, headers=headers)
