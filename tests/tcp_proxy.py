"""A loopback TCP proxy that fault tests put between a store and its server.

It forwards, goes silent (keeps every socket open but moves no byte, as a
paused host or a dropped link would), or resets every connection. It listens
on 127.0.0.1 only, serves a bounded number of connections and stops by itself
after ``lifetime`` seconds.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time


class TCPProxy:
    """Forward connections from ``127.0.0.1:<port>`` to ``target``.

    :param target: the real server's loopback address.
    :param lifetime: seconds after which the proxy closes everything.
    :param max_connections: connections accepted at most.
    """

    def __init__(
        self, target: tuple[str, int], *, lifetime: float = 120.0, max_connections: int = 64
    ) -> None:
        if not target[0].startswith("127."):
            raise ValueError("the proxy only forwards to loopback addresses")
        self.target = target
        self._deadline = time.monotonic() + lifetime
        self._max_connections = max_connections
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        #: The port the proxy listens on.
        self.port: int = self._listener.getsockname()[1]
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._accepted = 0
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def __enter__(self) -> TCPProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def silence(self) -> None:
        """Stop moving bytes, keeping every connection open."""
        self._forwarding.clear()

    def forward(self) -> None:
        """Move bytes again."""
        self._forwarding.set()

    def reset(self) -> None:
        """Abort every open connection with a TCP reset."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                _abort(sock)

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._stopped.set()
        self.reset()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def _running(self) -> bool:
        return not self._stopped.is_set() and time.monotonic() < self._deadline

    def _accept(self) -> None:
        try:
            while self._running():
                try:
                    client, _ = self._listener.accept()
                except TimeoutError:
                    continue
                if self._accepted >= self._max_connections:
                    client.close()
                    continue
                self._accepted += 1
                try:
                    server = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                with self._lock:
                    self._pairs.append((client, server))
                for source, sink in ((client, server), (server, client)):
                    thread = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                    self._threads.append(thread)
                    thread.start()
        finally:
            self._stopped.set()
            self.reset()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while self._running():
            if not self._forwarding.is_set():
                time.sleep(0.02)  # bytes wait in the kernel's buffers
                continue
            try:
                readable, _, _ = select.select([source], [], [], 0.1)
                if not readable or not self._forwarding.is_set():
                    continue
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
            except (OSError, ValueError):  # reset or closed meanwhile
                break
        for sock in (source, sink):
            _abort(sock)


def _abort(sock: socket.socket) -> None:
    try:
        # A zero linger time makes close() send a reset, not a FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def proxied(url: str, proxy: TCPProxy) -> str:
    """Return ``url`` (a SQLAlchemy URL string) pointed at ``proxy``."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    return parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
