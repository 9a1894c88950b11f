#!/usr/bin/env python3
"""Receives messages from the IoT platform simulator's AMQP listener with
python3-qpid-proton (an AMQP 1.0 client independent of go-amqp) and prints one
JSON line per message. Settles them as OUTCOMES says: a comma-separated list
(accept, release, reject, modify), one per received message, repeating the
last. Reads IOTSIM_ADDR, IOTSIM_CA, IOTSIM_USER, IOTSIM_PASS, COUNT."""
import json
import os
import sys

from proton import SSLDomain
from proton.utils import BlockingConnection


def main():
    ssl = SSLDomain(SSLDomain.MODE_CLIENT)
    ssl.set_trusted_ca_db(os.environ["IOTSIM_CA"])
    ssl.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
    conn = BlockingConnection(
        "amqps://" + os.environ["IOTSIM_ADDR"],
        ssl_domain=ssl,
        heartbeat=60,
        timeout=20,
        user=os.environ["IOTSIM_USER"],
        password=os.environ["IOTSIM_PASS"],
        allowed_mechs="PLAIN",
        sasl_enabled=True,
        virtual_host="localhost",
    )
    rcv = conn.create_receiver("default", credit=10)
    outcomes = os.environ.get("OUTCOMES", "accept").split(",")
    for i in range(int(os.environ["COUNT"])):
        m = rcv.receive(timeout=20)
        props = m.properties or {}
        body = m.body
        if not isinstance(body, (bytes, bytearray, memoryview)):
            print(json.dumps({"error": "body is a %s, want bytes (a data section)" % type(body).__name__}))
            sys.stdout.flush()
            body = b""
        print(json.dumps({
            "body_hex": bytes(body).hex(),
            "topic": props.get("topic"),
            "topic_type": type(props.get("topic")).__name__,
            "messageId": props.get("messageId"),
            "messageId_type": type(props.get("messageId")).__name__,
            "generateTime": props.get("generateTime"),
            "generateTime_type": type(props.get("generateTime")).__name__,
        }))
        sys.stdout.flush()
        outcome = outcomes[min(i, len(outcomes) - 1)]
        if outcome == "accept":
            rcv.accept()
        elif outcome == "release":
            rcv.release(delivered=False)
        elif outcome == "modify":
            rcv.release(delivered=True)
        elif outcome == "reject":
            rcv.reject()
    conn.close()


if __name__ == "__main__":
    main()
