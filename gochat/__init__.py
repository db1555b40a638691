"""gochat: a distributed instant-messaging server on Twisted and Autobahn.

``gochat.gateway`` holds client sockets; ``gochat.logic`` orders, stores and
routes messages. Pure cores (the timing wheel, the frame codec, the session
machine, the sequencing rules) import no reactor; time is passed in.
"""
