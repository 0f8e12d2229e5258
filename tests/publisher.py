"""A publisher in a process of its own, as a job or a cron script is: an app context, no server.

``python publisher.py REDIS_URL ROOM COUNT [DELAY] [PREFIX]`` publishes
``<PREFIX>:<i>`` for i in 0..COUNT-1, DELAY seconds apart, and prints one line
per message: ``ok <i>`` or ``err <i> <seconds the publish took>``.
"""

from __future__ import annotations

import sys
import time

from flask import Flask

from flask_pine_ws import ChannelError, FlaskPineWS


def main() -> None:
    url, room, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    prefix = sys.argv[5] if len(sys.argv) > 5 else "p"
    app = Flask(__name__)
    app.config["PINE_WS_MESSAGE_QUEUE"] = url
    pine = FlaskPineWS(app)
    with app.app_context():
        for i in range(count):
            started = time.monotonic()
            try:
                pine.publish(room, f"{prefix}:{i}")
                print(f"ok {i}", flush=True)
            except ChannelError:
                print(f"err {i} {time.monotonic() - started:.3f}", flush=True)
            if delay:
                time.sleep(delay)


if __name__ == "__main__":
    main()
