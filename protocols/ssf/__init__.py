"""Shared Signals (SSF 1.0, CAEP 1.0, RISC): Security Event Tokens (RFC 8417) pushed over
HTTP (RFC 8935).

:mod:`protocols.ssf.receiving` reads and checks a SET an upstream transmitter pushed;
:mod:`protocols.ssf.signals` says what each event asks of us. Both are sans-IO: the caller
fetches keys and acts on the answer.
"""
