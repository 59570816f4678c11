"""The stream state machine: states, allowed transitions, the typed error for a call in the wrong state."""

from __future__ import annotations

from enum import StrEnum

from streamd.errors import ConflictError


class StreamState(StrEnum):
    """The states of a stream; `TRANSITIONS` says which may follow which."""

    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    RECONNECTING = "reconnecting"
    FINISHED = "finished"  # a file reached its end
    ERROR = "error"  # gave up; last_error says why
    STOPPED = "stopped"  # deleted


TRANSITIONS: dict[StreamState, frozenset[StreamState]] = {
    StreamState.STARTING: frozenset(
        {
            StreamState.RUNNING,
            StreamState.RECONNECTING,
            StreamState.PAUSED,
            StreamState.FINISHED,
            StreamState.ERROR,
            StreamState.STOPPED,
        }
    ),
    StreamState.RUNNING: frozenset(
        {
            StreamState.PAUSED,
            StreamState.RECONNECTING,
            StreamState.FINISHED,
            StreamState.ERROR,
            StreamState.STOPPED,
        }
    ),
    StreamState.RECONNECTING: frozenset(
        {StreamState.RUNNING, StreamState.PAUSED, StreamState.ERROR, StreamState.STOPPED}
    ),
    StreamState.PAUSED: frozenset({StreamState.STARTING, StreamState.RUNNING, StreamState.STOPPED}),
    StreamState.FINISHED: frozenset({StreamState.STOPPED}),
    StreamState.ERROR: frozenset({StreamState.STOPPED}),
    StreamState.STOPPED: frozenset(),
}

# What a user may ask in each state (DELETE works from every state).
PAUSABLE = frozenset({StreamState.STARTING, StreamState.RUNNING, StreamState.RECONNECTING})
RESUMABLE = frozenset({StreamState.PAUSED})


class StreamStateError(ConflictError):
    """A call that the stream's state does not allow (409)."""

    code = "invalid_stream_state"


def check_transition(current: StreamState, target: StreamState) -> bool:
    """Whether `target` may follow `current`."""
    return target in TRANSITIONS[current]


def require(current: StreamState, allowed: frozenset[StreamState], action: str, stream_id: int) -> None:
    """Raise `StreamStateError` naming the allowed states unless `current` is one of them."""
    if current not in allowed:
        states = ", ".join(sorted(state.value for state in allowed))
        raise StreamStateError(
            f"cannot {action} stream {stream_id} while it is {current.value}; {action} is allowed when it is "
            f"{states}"
        )
