"""`with` and `async with` for anything that closes: Producer, AsyncProducer and their
test doubles share these."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self


class Closing:
    def close(self, timeout: float | None = ...) -> Any:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClosing:
    async def close(self, timeout: float | None = ...) -> Any:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
