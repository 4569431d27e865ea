#!/usr/bin/env python3
"""Loopback TCP -> Unix socket forwarder (stdlib only), for HTTP tools that cannot speak to a
Unix socket (schemathesis). Usage: unix_forward.py SOCKET PORTFILE

Listens on 127.0.0.1 on a free port, writes the port to PORTFILE once listening, and pipes
every connection to SOCKET byte for byte until either side closes. Runs until killed."""

import asyncio
import os
import sys


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            writer.close()


async def main(sock_path, port_file):
    async def handle(client_r, client_w):
        try:
            up_r, up_w = await asyncio.open_unix_connection(sock_path)
        except OSError as e:
            print(f"unix_forward: cannot connect to {sock_path}: {e}", file=sys.stderr)
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))
        for w in (client_w, up_w):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, port_file)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: unix_forward.py SOCKET PORTFILE")
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2]))
    except KeyboardInterrupt:
        pass
