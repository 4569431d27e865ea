import os

import docker
import reaper_client

image = os.environ.get("EXECUTOR_IMAGE", "executor:latest")
engine = docker.from_env()

with reaper_client.session(ttl="2h", heartbeat="30s") as s:
    # Everything the workflow creates carries the session's labels.
    net = engine.networks.create(f"{s.name}-net", labels=s.labels, internal=True)
    engine.containers.run(
        image,
        ["sleep", "3600"],
        name=f"{s.name}-executor",
        labels=s.labels,
        network=net.name,
        init=True,
        detach=True,
    )
    print(f"session {s.name} is running")
    ...  # the workflow; an exception ends the session as failed, and kill -9 lets it lapse
# The session has ended: reaper is removing its container and network now.
