"""`GET /`: a small self-refreshing HTML page listing the streams with their state, fps, latency and
latest snapshot, so a person can look instead of read. No JavaScript."""

from __future__ import annotations

import html
from urllib.parse import quote

from aiohttp import web

from streamd import __version__
from streamd.api.context import services
from streamd.api.http import QueryInt, query_int
from streamd.entities import ErrorStatus

REFRESH = QueryInt("refresh", 2, 0, 3600, "Seconds between reloads of the page; 0 for never.")


async def index(request: web.Request) -> web.Response:
    """The status page (`GET /`): the streams with their state, rates, drops and latest snapshot."""
    svc = services(request)
    key = request.query.get("api_key")
    refresh_s = query_int(request, REFRESH)
    meta = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    suffix = f"?api_key={quote(key)}" if key else ""
    rows = []
    for pipeline in svc.streams.all():
        status = pipeline.status()
        latency = status.latency.p50
        image = (
            (
                f'<img src="/v0.7/streams/{pipeline.stream_id}/snapshot.jpg{suffix}" alt="latest frame of '
                f'{html.escape(pipeline.name)}">'
            )
            if pipeline.latest is not None
            else "<em>no frame yet</em>"
        )
        rows.append(
            f"<tr><td>{pipeline.stream_id}</td><td>{html.escape(pipeline.name)}</td>"
            f'<td class="state {status.state}">{status.state}</td>'
            f"<td>{status.fps_in:.1f} / {status.fps_out:.1f}</td>"
            f"<td>{'-' if latency is None else f'{latency * 1000:.0f} ms'}</td>"
            f"<td>{status.frames.processed}</td><td>{sum(status.frames.dropped.values())}</td>"
            f"<td>{_error_cell(status.error)}</td><td>{image}</td></tr>"
        )
    body = "\n".join(rows) or '<tr><td colspan="9">No streams: POST /v0.7/streams to add one.</td></tr>'
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">{meta}
<title>streamd</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .4em .8em; text-align: left; }}
img {{ max-width: 320px; display: block; }} .running {{ color: #080; }} .error {{ color: #b00; }}
.reconnecting {{ color: #c70; }} .paused, .finished, .healed {{ color: #666; }}
</style></head><body>
<h1>streamd {__version__}</h1>
<table><thead><tr><th>id</th><th>name</th><th>state</th><th>fps in / out</th><th>latency p50</th>
<th>processed</th><th>dropped</th><th>last error</th><th>latest frame</th></tr></thead>
<tbody>
{body}
</tbody></table>
<p>Refreshes every {refresh_s or "-"} s (?refresh=N, 0 for never).
API: <a href="/openapi.json">/openapi.json</a>,
metrics: <a href="/metrics">/metrics</a>.</p>
</body></html>"""
    return web.Response(text=page, content_type="text/html")


def _error_cell(error: ErrorStatus) -> str:
    """The stream's last error; one it has recovered from is greyed and dated, not shown as current."""
    if not error.message:
        return ""
    if error.active:
        return html.escape(error.message)
    return f'<span class="healed">recovered from: {html.escape(error.message)} ({error.at})</span>'
