"""Which streams one client follows.

A `Filters` is never changed: a subscribe or unsubscribe builds a new one,
which the session swaps in under its lock. So the fan-out thread reads a
consistent set without waiting, and the work of a change happens outside
any lock."""
from ..client_protocol import ClientError, Target, label


class Filters:
    __slots__ = ("include", "exclude", "_wants")

    def __init__(self, include: frozenset | None = None, exclude: frozenset = frozenset()):
        self.include = include      # None: every stream
        self.exclude = exclude
        self._wants: dict[tuple[str, str], bool] = {}

    @property
    def everything(self) -> bool:
        return self.include is None and not self.exclude

    def wanted(self, key: tuple[str, str]) -> bool:
        w = self._wants.get(key)
        if w is None:
            w = (key not in self.exclude and key[0] not in self.exclude
                 and (self.include is None or key in self.include or key[0] in self.include))
            self._wants[key] = w
        return w

    def changed(self, action: str, targets: list[Target], cap: int) -> "Filters":
        """The filters after a subscribe or unsubscribe. Includes and
        excludes together are capped, so neither the filters nor the reply
        that lists them can grow without bound."""
        targets = frozenset(targets)
        if action == "subscribe":
            include = targets if self.include is None else self.include | targets
            new = Filters(include, self.exclude - targets)
        elif self.include is None:
            new = Filters(None, self.exclude | targets)
        else:
            new = Filters(self.include - targets, self.exclude)
        if new.size > cap:
            raise ClientError(f"too many subscriptions: at most {cap} symbols and streams per client, "
                              f"subscribed and unsubscribed together")
        return new

    @property
    def size(self) -> int:
        return len(self.include or ()) + len(self.exclude)

    def describe(self) -> dict:
        return {"symbols": None if self.include is None else sorted(map(label, self.include)),
                "excluded": sorted(map(label, self.exclude))}
