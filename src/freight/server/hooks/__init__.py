"""Hook delivery: the engine's :class:`~freight.core.hooks.Hooks` port over a signed HTTP
webhook (``--hook-url``) and/or a command (``--hook-cmd``).

* :mod:`.context`: the request a hook event comes from (remote address, headers);
* :mod:`.signing`: the HMAC-SHA256 signature a receiver checks;
* :mod:`.targets`: one delivery to the webhook or the command, and what it answered;
* :mod:`.dispatcher`: :class:`HookDispatcher`, the port's implementation (asks, best-effort
  events, outbox entries);
* :mod:`.outbox_worker`: delivers durable events from the outbox until they arrive.

docs/hooks.md describes the payload, the headers and the failure policy.
"""

from freight.server.hooks.dispatcher import HOOKS, HookDispatcher, HookSettings

__all__ = ["HOOKS", "HookDispatcher", "HookSettings"]
