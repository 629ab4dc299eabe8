#!/usr/bin/env python3
"""A CONNECT-only HTTP proxy for tests, on loopback. Every CONNECT target is appended to
--log (one `host:port` line, as the client sent it) before the tunnel opens; anything but
CONNECT is refused with 405. Tunnels lead to loopback addresses only. --map PORT=PORT sends
a tunnel for one port to another (port discovery asks the web port, 443, which a test
cannot bind). Stops by itself after --max-seconds."""
import argparse
import asyncio
import os

LOOPBACK = ("localhost", "127.0.0.1", "::1")


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
            writer.close()
        except (ConnectionError, OSError):
            pass


async def refuse(writer, status):
    writer.write(("HTTP/1.1 %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % status).encode())
    try:
        await writer.drain()
    finally:
        writer.close()


async def handle(reader, writer, args):
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(parts) != 3 or parts[0] != "CONNECT":
        await refuse(writer, "405 Method Not Allowed")
        return
    target = parts[1]
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    with open(args.log, "a") as f:
        f.write(target + "\n")
        f.flush()
    if (host not in LOOPBACK and not host.startswith("127.")) or not port.isdigit():
        await refuse(writer, "403 Forbidden")
        return
    port = args.map.get(port, port)
    try:
        up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 10)
    except (OSError, asyncio.TimeoutError):
        await refuse(writer, "502 Bad Gateway")
        return
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await writer.drain()
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--log", required=True, help="file that receives one line per CONNECT")
    p.add_argument("--ready-file", required=True, help="gets the listening port")
    p.add_argument("--map", action="append", default=[], help="FROM=TO: tunnel port FROM to TO")
    p.add_argument("--max-seconds", type=float, default=600)
    args = p.parse_args()
    args.map = dict(m.split("=", 1) for m in args.map)
    open(args.log, "a").close()
    server = await asyncio.start_server(lambda r, w: handle(r, w, args), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, args.ready_file)
    async with server:
        try:
            await asyncio.wait_for(server.serve_forever(), args.max_seconds)
        except asyncio.TimeoutError:
            pass


if __name__ == "__main__":
    asyncio.run(main())
