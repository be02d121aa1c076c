"""moto's server, with its requests applied one at a time.

moto's DynamoDB backend checks a condition and writes the item in two steps
without a lock, so under its threaded server two concurrent conditional writes
can both pass. Real DynamoDB makes every single write and transaction atomic.
Holding one lock around each request gives the emulator that same atomicity;
connections are still served by threads, so keep-alive clients do not block
each other. Arguments are moto_server's own (-H HOST -p PORT).
"""

import threading

import moto.server as server

_lock = threading.Lock()
_Dispatcher = server.DomainDispatcherApplication


class SerialDispatcher(_Dispatcher):
    def __call__(self, environ, start_response):
        with _lock:
            # Materialise the body under the lock as well.
            return list(super().__call__(environ, start_response))


server.DomainDispatcherApplication = SerialDispatcher

if __name__ == "__main__":
    server.main()
