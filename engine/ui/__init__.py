"""The web console of `toolfsm ui` (extra `toolfsm[ui]`): `app` is the Starlette app and the
JSON API, `pages` its HTML. Only this package imports Starlette."""
