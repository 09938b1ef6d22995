"""The synthetic egocentric world: a table seen from the wearer's head, written in the Ego4D layout.

What it is: per video, a handful of objects (colour x kind) lie on a textured table, one per grid cell.
A script of actions (pick up, put in / on / on the table, open, close) drives the wearer: the eyes
fixate the next target 0.5-1.2 s before the hand reaches it, the head turns toward it and the hand
approaches; between actions the eyes wander over other objects. The head pans and jitters (optical
flow matters) and arms pass over objects (occlusion happens). Gaze is written as an Ego4D gaze CSV at
about 200 Hz (bottom-left origin, noise, saccades, blinks, untracked gaps, out-of-frame excursions),
with ego4d.json and a #C-tagged narration.json; the frames are an mp4. Same seed: the same CSV and JSON
bytes and the same decoded frames.

What it is not: photo-realistic, physically simulated, or a benchmark of anything but whether a
model can learn *where to look* from gaze. Frames never show gaze: rendering reads the plan (objects,
actions, head and hand motion) and nothing that the gaze simulation produces.

Learnability choices (what a tiny model trained in minutes can learn): objects sit on the tiny model's patch grid (the
frame's centre square is GRID x GRID cells, one object per cell) and the head pans in whole cells; the
frame at the last whole second before each action (the last 1 fps keyframe before it) shows the head
turned `HEAD_TURN * cue` of the way and the hand `HAND_REACH * cue` of the way to the target.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from gazevlm import atomic, ego4d, video_frames
from gazevlm.layout import REPORTS_DIR
from gazevlm.params import Params, SampleParams

# The tiny preset sees the centre square as GRID x GRID patches (gazevlm.geometry.patch_grid("tiny");
# not imported here because gazevlm.models pulls in torch, and a test checks the two agree).
GRID = 8
PAN_COLS, PAN_ROWS = 6, 4  # how far (in cells) the head can pan across the table
WORLD_COLS, WORLD_ROWS = GRID + PAN_COLS, GRID + PAN_ROWS
WALL_ROWS = 2  # the top of the world is a tiled wall, the rest is the table
OBJECT_COLS = range(1, WORLD_COLS - 1)
OBJECT_ROWS = range(WALL_ROWS + 1, WORLD_ROWS - 2)

COLOURS = {  # RGB; few and far apart so that a 8-px patch tells them apart
    "red": (215, 45, 45),
    "green": (40, 165, 70),
    "blue": (45, 90, 230),
    "yellow": (240, 205, 40),
    "purple": (150, 60, 200),
    "white": (242, 242, 242),
}
KINDS = ("cup", "bowl", "plate", "knife", "bottle", "spoon")
GRASPABLE = frozenset({"cup", "knife", "bottle", "spoon"})
HOLDS_IN = {"bowl": frozenset({"cup", "knife", "spoon"}), "cup": frozenset({"knife", "spoon"})}
HOLDS_ON = {"plate": frozenset({"cup", "knife", "spoon", "bottle"})}
VERBS = ("pick", "put_in", "put_on", "put_table", "open", "close")
TEMPLATES = {
    "pick": "#C C picks up the {obj}",
    "put_in": "#C C puts the {obj} in the {dest}",
    "put_on": "#C C puts the {obj} on the {dest}",
    "put_table": "#C C puts the {obj} on the table",
    "open": "#C C opens the {obj}",
    "close": "#C C closes the {obj}",
    "hold": "#C C holds the {obj}",
}

# Timing (seconds). Contacts fall PHASE after a whole second, late in it: the frame at that second is the
# last keyframe before the action (the cue frame) and the keyframe after the contact is nearer to it than
# to the next contact, so it is captioned with it. Most actions follow the previous one a second later
# (GAPS), so that most keyframes are the cue frame of the next action, as in brisk table work; the rest
# come after a pause in which the eyes wander. The gaze lead is at least PHASE + LEAD_MARGIN, so the eyes
# are on the target at the cue frame, and the eyes leave the previous target at most EYES_EARLY before
# its contact (people look ahead before finishing an action); head and hand start a little after the eyes.
PHASE = (0.5, 0.7)
LEAD = (0.5, 1.2)
LEAD_MARGIN = 0.35
EYES_EARLY = 0.2
HEAD_LAG, HAND_LAG = 0.10, 0.15
RELEASE_S = 0.5
GAPS, GAP_P = (1, 2), (0.7, 0.3)  # whole seconds from one contact's second to the next one's
HEAD_TURN, HAND_REACH = 0.8, 0.85  # share of the turn / reach done at the cue frame when cue = 1

# Hands, in cells of the centre square (x right, y down); the shoulders are below the frame.
RIGHT_REST, RIGHT_SHOULDER, CARRY = (6.2, 7.7), (7.6, 10.0), (5.0, 6.3)
LEFT_REST, LEFT_SHOULDER = (1.4, 7.8), (0.2, 10.0)
GRASP_OFFSET = (0.15, 0.62)  # palm centre relative to the target cell centre at contact
HELD_OFFSET = (-0.10, -0.47)  # held object relative to the palm
PALM_R, ARM_W = 0.28, 0.34
SKIN = (226, 178, 146)
INSIDE_SCALE = 0.6

# Independent random streams per video: changing how gaze is simulated cannot change a frame.
UID, PLAN, RENDER, GAZE, NARRATION = range(5)
FOURCC = "mp4v"


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, stream])


def video_uid(seed: int, index: int) -> str:
    """An Ego4D-style uuid4 string, deterministic from the seed and the video's index."""
    return str(uuid.UUID(bytes=_rng(seed, index, UID).bytes(16), version=4))


@dataclass(frozen=True)
class Geometry:
    """Frame size, cell size and where the grid sits in the frame and on the world canvas."""

    width: int
    height: int
    cell: int

    @classmethod
    def of(cls, sp: SampleParams) -> Geometry:
        side = min(sp.width, sp.height)
        if side < 8 * GRID:
            raise ValueError(
                f"params.sample: frames of {sp.width}x{sp.height} are too small; the "
                f"shorter side must be at least {8 * GRID} px ({GRID} cells of 8 px)"
            )
        return cls(sp.width, sp.height, side // GRID)

    @property
    def origin(self) -> tuple[int, int]:
        """Top-left of the centre square (what the model's centre crop keeps) in frame pixels."""
        return (self.width - GRID * self.cell) // 2, (self.height - GRID * self.cell) // 2

    @property
    def margin(self) -> int:
        return max(4, self.cell // 2)

    @property
    def canvas_size(self) -> tuple[int, int]:
        extra_w, extra_h = self.width - GRID * self.cell, self.height - GRID * self.cell
        return (2 * self.margin + WORLD_COLS * self.cell + extra_w, 2 * self.margin + WORLD_ROWS * self.cell + extra_h)

    def cell_centre(self, col: float, row: float) -> np.ndarray:
        """World-canvas pixel of a cell's centre."""
        ox, oy = self.origin
        return np.array([self.margin + ox + (col + 0.5) * self.cell, self.margin + oy + (row + 0.5) * self.cell])

    def square_px(self, cx: float, cy: float) -> np.ndarray:
        """Frame pixel of a point given in cells of the centre square."""
        ox, oy = self.origin
        return np.array([ox + cx * self.cell, oy + cy * self.cell])


@dataclass(frozen=True)
class Thing:
    colour: str
    kind: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclass(frozen=True)
class ObjectState:
    cell: tuple[int, int] | None  # None while held
    inside: int | None  # index of the receptacle it sits in / on
    closed: bool  # bottles only


@dataclass(frozen=True)
class Action:
    verb: str
    obj: int
    dest: int | None
    cell: tuple[int, int]  # the world cell the eyes, head and hand go to
    contact_s: float
    lead_s: float  # the eyes land on the target this long before contact
    cue_s: float  # the last whole second before contact: the frame with the full cue
    cam_before: tuple[int, int]
    cam_cue: tuple[int, int]
    cam_after: tuple[int, int]
    text: str

    @property
    def gaze_shift_s(self) -> float:
        return self.contact_s - self.lead_s


@dataclass
class VideoPlan:
    """Everything a video is rendered from. Gaze is simulated from it too, never the other way round."""

    seed: int
    index: int
    uid: str
    geom: Geometry
    fps: int
    num_frames: int
    gaze_hz: int
    cue: float
    things: list[Thing]
    states: list[list[ObjectState]]  # states[e]: after e contacts
    held: list[int | None]  # held[e]: object in the right hand after e contacts
    actions: list[Action]
    narrations: list[tuple[float, str]]
    jitter: np.ndarray  # (2 axes, 2 components, [amplitude px, frequency Hz, phase])

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    @property
    def contacts(self) -> np.ndarray:
        return np.array([a.contact_s for a in self.actions])

    def epoch(self, t: np.ndarray) -> np.ndarray:
        """How many contacts have happened at each time (index into states / held)."""
        return np.searchsorted(self.contacts, np.asarray(t, dtype=float), side="right")


# --- planning ----------------------------------------------------------------------------------------


def _sample_things(rng: np.random.Generator, n: int) -> list[Thing]:
    if not 2 <= n <= 12:
        raise ValueError(f"params.sample.objects = {n}: the table holds 2 to 12 objects")
    while True:  # rejection keeps the script feasible: something to carry, somewhere to put it
        kinds = [KINDS[i] for i in rng.integers(0, len(KINDS), n)]
        if sum(k in GRASPABLE for k in kinds) >= 2 and any(k in ("bowl", "plate") for k in kinds):
            break
    names = list(COLOURS)
    if n <= len(names):
        colours = [names[i] for i in rng.permutation(len(names))[:n]]
    else:
        colours = [names[i] for i in rng.integers(0, len(names), n)]
    things = []
    for colour, kind in zip(colours, kinds, strict=False):
        while Thing(colour, kind) in things:
            colour = names[int(rng.integers(0, len(names)))]
        things.append(Thing(colour, kind))
    return things


def _free_cells(occupied: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Cells at least one empty cell away from every object, so each object has its own cell."""
    return [
        (c, r)
        for r in OBJECT_ROWS
        for c in OBJECT_COLS
        if all(max(abs(c - oc), abs(r - orow)) >= 2 for oc, orow in occupied)
    ]


def _place_things(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    cells: list[tuple[int, int]] = []
    for _ in range(n):
        free = _free_cells(cells)
        if not free:
            raise ValueError(f"params.sample.objects = {n}: too many objects for the table")
        cells.append(free[int(rng.integers(0, len(free)))])
    return cells


def _head_pose(cell: tuple[int, int], cam: tuple[int, int]) -> tuple[int, int]:
    """Camera cell offset that brings the target to the middle of the view (clipped to the table)."""
    options = [min(max(cell[0] - k, 0), PAN_COLS) for k in (GRID // 2 - 1, GRID // 2)]
    col = min(options, key=lambda c: (abs(c - cam[0]), c))
    row = min(max(cell[1] - (GRID // 2 - 1), 0), PAN_ROWS)
    return col, row


def _choose_action(
    rng: np.random.Generator,
    things: list[Thing],
    state: list[ObjectState],
    held: int | None,
    cam: tuple[int, int],
    last_placed: int | None,
    came_from: tuple[int, int] | None = None,
) -> tuple[str, int, int | None, tuple[int, int]]:
    contains = {s.inside: i for i, s in enumerate(state) if s.inside is not None}
    if held is None:
        bottles = [i for i, t in enumerate(things) if t.kind == "bottle" and state[i].cell is not None]
        closed = [i for i in bottles if state[i].closed]
        opened = [i for i in bottles if not state[i].closed]
        pickable = [
            i
            for i, t in enumerate(things)
            if t.kind in GRASPABLE and state[i].cell is not None and not state[i].closed and i not in contains
        ]
        fresh = [i for i in pickable if i != last_placed] or pickable
        options = [("open", closed, 0.25), ("close", opened, 0.08), ("pick", fresh, 1.0)]
        options = [(v, c, w) for v, c, w in options if c]
        weights = np.array([w for _, _, w in options])
        verb, candidates, _ = options[int(rng.choice(len(options), p=weights / weights.sum()))]
        obj = candidates[int(rng.integers(0, len(candidates)))]
        return verb, obj, None, state[obj].cell
    kind = things[held].kind
    receptacles = [
        j
        for j, t in enumerate(things)
        if j != held
        and state[j].cell is not None
        and state[j].inside is None
        and j not in contains
        and (kind in HOLDS_IN.get(t.kind, ()) or kind in HOLDS_ON.get(t.kind, ()))
    ]
    if receptacles and rng.random() < 0.65:
        dest = receptacles[int(rng.integers(0, len(receptacles)))]
        verb = "put_in" if things[dest].kind in HOLDS_IN else "put_on"
        return verb, held, dest, state[dest].cell
    occupied = [s.cell for i, s in enumerate(state) if s.cell is not None]
    free = [c for c in _free_cells(occupied) if c != came_from]  # not straight back where it was
    near = [
        c
        for c in free  # somewhere in view, away from the frame's edges and the resting hands
        if cam[0] + 1 <= c[0] <= cam[0] + GRID - 2 and cam[1] + 1 <= c[1] <= cam[1] + GRID - 3
    ]
    pool = near or free
    if not pool:  # a crowded table: any empty cell
        pool = [(c, r) for r in OBJECT_ROWS for c in OBJECT_COLS if (c, r) not in occupied]
    return "put_table", held, None, pool[int(rng.integers(0, len(pool)))]


def _apply(state: list[ObjectState], verb: str, obj: int, dest: int | None, cell: tuple[int, int]) -> list[ObjectState]:
    new = list(state)
    s = state[obj]
    if verb == "pick":
        new[obj] = ObjectState(None, None, s.closed)
    elif verb in ("put_in", "put_on"):
        new[obj] = ObjectState(cell, dest, s.closed)
    elif verb == "put_table":
        new[obj] = ObjectState(cell, None, s.closed)
    elif verb in ("open", "close"):
        new[obj] = ObjectState(s.cell, s.inside, verb == "close")
    return new


def plan_video(sp: SampleParams, index: int) -> VideoPlan:
    """The script of one video: objects, actions with their timing and head poses, narrations."""
    geom = Geometry.of(sp)
    rng = _rng(sp.seed, index, PLAN)
    num_frames = int(round(sp.seconds * sp.fps))
    duration = num_frames / sp.fps
    things = _sample_things(rng, sp.objects)
    cells = _place_things(rng, len(things))
    state = [
        ObjectState(cell, None, t.kind == "bottle" and bool(rng.random() < 0.7))
        for t, cell in zip(things, cells, strict=False)
    ]
    states, held_by_epoch, actions = [state], [None], []
    held: int | None = None
    cam = (PAN_COLS // 2, PAN_ROWS // 2)
    last_placed: int | None = None
    came_from: tuple[int, int] | None = None
    whole, phase = 1, float(rng.uniform(*PHASE))
    prev_contact = -np.inf
    while whole + phase <= duration - 0.3:
        contact = whole + phase
        verb, obj, dest, cell = _choose_action(rng, things, state, held, cam, last_placed, came_from)
        came_from = cell if verb == "pick" else came_from
        lead = float(rng.uniform(max(LEAD[0], phase + LEAD_MARGIN), min(LEAD[1], contact - prev_contact + EYES_EARLY)))
        after = _head_pose(cell, cam)
        turn = np.floor(HEAD_TURN * sp.cue * (np.subtract(after, cam)) + 0.5).astype(int)
        cue_cam = (cam[0] + int(turn[0]), cam[1] + int(turn[1]))
        text = TEMPLATES[verb].format(obj=things[obj].name, dest=things[dest].name if dest is not None else "")
        actions.append(
            Action(verb, obj, dest, cell, round(contact, 4), round(lead, 4), float(whole), cam, cue_cam, after, text)
        )
        state = _apply(state, verb, obj, dest, cell)
        held = obj if verb == "pick" else (None if verb.startswith("put") else held)
        last_placed = obj if verb.startswith("put") else last_placed
        states.append(state)
        held_by_epoch.append(held)
        cam = after
        prev_contact = round(contact, 4)
        whole, phase = whole + int(rng.choice(GAPS, p=GAP_P)), float(rng.uniform(*PHASE))
    jitter = np.stack(
        [
            np.stack(
                [rng.uniform(0.3, 0.7, 2) * 0.05 * geom.cell, rng.uniform(0.4, 1.5, 2), rng.uniform(0, 2 * np.pi, 2)],
                axis=1,
            )
            for _ in range(2)
        ]
    )
    return VideoPlan(
        sp.seed,
        index,
        video_uid(sp.seed, index),
        geom,
        sp.fps,
        num_frames,
        sp.gaze_hz,
        sp.cue,
        things,
        states,
        held_by_epoch,
        actions,
        _narrate(actions, things),
        jitter,
    )


def _narrate(actions: list[Action], things: list[Thing]) -> list[tuple[float, str]]:
    """One narration per action at its contact, plus "holds" between contacts more than 2 s apart, so
    that every second after the first action is within 1 s of a narration."""
    out = []
    for i, a in enumerate(actions):
        out.append((a.contact_s, a.text))
        if i + 1 < len(actions) and actions[i + 1].contact_s - a.contact_s > 2.0 and a.verb == "pick":
            mid = round((a.contact_s + actions[i + 1].contact_s) / 2, 4)
            out.append((mid, TEMPLATES["hold"].format(obj=things[a.obj].name)))
    return out


# --- kinematics (vectorised over time) ---------------------------------------------------------------


def _smoothstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _knots(knot_t: np.ndarray, knot_v: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Eased interpolation through knots (times strictly increasing; values (K, D))."""
    i = np.clip(np.searchsorted(knot_t, t, side="right") - 1, 0, len(knot_t) - 2)
    s = _smoothstep((t - knot_t[i]) / (knot_t[i + 1] - knot_t[i]))
    return knot_v[i] + s[:, None] * (knot_v[i + 1] - knot_v[i])


class Kinematics:
    """Head (camera) and hand positions of a plan at any times."""

    def __init__(self, plan: VideoPlan):
        self.plan = plan
        g = plan.geom
        cam0 = (PAN_COLS // 2, PAN_ROWS // 2)
        kt, kv = [-1.0], [cam0]
        for a in plan.actions:
            # a look-ahead before the previous contact must not move the head before that contact
            kt += [max(a.gaze_shift_s + HEAD_LAG, kt[-1] + 0.05), a.cue_s, a.contact_s]
            kv += [a.cam_before, a.cam_cue, a.cam_after]
        kt.append(plan.duration_s + 1.0)
        kv.append(kv[-1])
        self.head_t, self.head_v = np.array(kt), np.array(kv, dtype=float)
        self.rest, self.carry = g.square_px(*RIGHT_REST), g.square_px(*CARRY)
        # Hand phases: (t0, t_mid, t1, share done at t_mid, start frame point, end point, end is world)
        self.phases: list[tuple[float, float, float, float, np.ndarray, np.ndarray, bool]] = []
        prev_t, prev_point, idle = -1.0, self.rest, self.rest
        for e, a in enumerate(plan.actions):
            start = max(a.gaze_shift_s + HAND_LAG, prev_t + 0.08)
            if self.phases:  # release after the previous contact, back to rest or to the carry pose,
                # or, when the next reach follows at once, straight on from where the hand is
                idle = idle if start - prev_t >= RELEASE_S else prev_point
                self.phases.append((prev_t, min(prev_t + RELEASE_S, start), start, 1.0, prev_point, idle, False))
            else:
                self.phases.append((prev_t, start, start, 1.0, idle, idle, False))
            grasp = g.cell_centre(*a.cell) + np.multiply(GRASP_OFFSET, g.cell)
            self.phases.append((start, a.cue_s, a.contact_s, HAND_REACH * plan.cue, idle, grasp, True))
            prev_t = a.contact_s
            prev_point = grasp - self.camera(np.array([a.contact_s]))[0]
            idle = self.carry if plan.held[e + 1] is not None else self.rest
        self.phases.append((prev_t, prev_t + RELEASE_S, plan.duration_s + 1.0, 1.0, prev_point, idle, False))
        self.phase_t0 = np.array([p[0] for p in self.phases])

    def camera(self, t: np.ndarray) -> np.ndarray:
        """World-canvas pixel of the frame's top-left corner, (n, 2)."""
        t = np.atleast_1d(np.asarray(t, dtype=float))
        g = self.plan.geom
        cells = _knots(self.head_t, self.head_v, t)
        jit = np.zeros((len(t), 2))
        for axis in range(2):
            for amp, freq, phase in self.plan.jitter[axis]:
                jit[:, axis] += amp * np.sin(2 * np.pi * freq * t + phase)
        return g.margin + cells * g.cell + jit

    def right_hand(self, t: np.ndarray) -> np.ndarray:
        """Frame pixel of the right palm, (n, 2)."""
        t = np.atleast_1d(np.asarray(t, dtype=float))
        out = np.empty((len(t), 2))
        which = np.clip(np.searchsorted(self.phase_t0, t, side="right") - 1, 0, len(self.phases) - 1)
        cam = self.camera(t)
        for k in np.unique(which):
            m = which == k
            t0, tm, t1, share, p0, p1, world = self.phases[k]
            tt = t[m]
            frac = np.where(
                tt < tm,
                share * _smoothstep((tt - t0) / max(tm - t0, 1e-6)),
                share + (1 - share) * _smoothstep((tt - tm) / max(t1 - tm, 1e-6)),
            )
            end = p1 - cam[m] if world else np.broadcast_to(p1, (int(m.sum()), 2))
            out[m] = p0 + frac[:, None] * (end - p0)
        return out

    def left_hand(self, t: np.ndarray) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, dtype=float))
        base = self.plan.geom.square_px(*LEFT_REST)
        bob = 0.06 * self.plan.geom.cell * np.sin(2 * np.pi * 0.35 * t)
        return np.stack([base[0] + 0.5 * bob, base[1] + bob], axis=1)


# --- rendering (reads the plan only) -----------------------------------------------------------------


def _bgr(rgb: Sequence[float]) -> tuple[int, int, int]:
    return int(rgb[2]), int(rgb[1]), int(rgb[0])


def _mix(rgb: Sequence[int], other: Sequence[int], w: float) -> tuple[int, ...]:
    return tuple(int(round((1 - w) * a + w * b)) for a, b in zip(rgb, other, strict=False))


def _sprite(thing: Thing, closed: bool, size: int) -> np.ndarray:
    """(size, size, 4) float32 BGRA sprite, drawn 4x larger and area-downsampled for smooth edges."""
    s = 4 * size
    colour_plane = np.zeros((s, s, 3), np.uint8)
    alpha_plane = np.zeros((s, s), np.uint8)
    col = COLOURS[thing.colour]
    light, dark = _mix(col, (255, 255, 255), 0.4), _mix(col, (0, 0, 0), 0.45)

    def P(x: float, y: float) -> tuple[int, int]:
        return int(round(x * s)), int(round(y * s))

    def fill(draw) -> None:  # draw colour into BGR and opacity into alpha
        for plane, value in ((colour_plane, None), (alpha_plane, 255)):
            draw(plane, value)

    def rect(x0, y0, x1, y1, rgb):
        fill(lambda p, v: cv2.rectangle(p, P(x0, y0), P(x1, y1), _bgr(rgb) if v is None else v, -1))

    def ellipse(cx, cy, ax, ay, a0, a1, rgb, angle=0, thick=-1):
        fill(
            lambda p, v: cv2.ellipse(
                p,
                P(cx, cy),
                P(ax, ay),
                angle,
                a0,
                a1,
                _bgr(rgb) if v is None else v,
                thick if thick < 0 else int(thick * s),
            )
        )

    k = thing.kind
    if k == "cup":
        ellipse(0.7, 0.5, 0.15, 0.16, 0, 360, dark, thick=0.08)
        rect(0.18, 0.14, 0.66, 0.86, col)
        rect(0.18, 0.14, 0.66, 0.22, light)
    elif k == "bowl":
        ellipse(0.5, 0.34, 0.47, 0.52, 0, 180, col)
        ellipse(0.5, 0.34, 0.47, 0.11, 0, 360, dark)
    elif k == "plate":
        ellipse(0.5, 0.5, 0.47, 0.47, 0, 360, col)
        ellipse(0.5, 0.5, 0.3, 0.3, 0, 360, light)
    elif k == "knife":
        rect(0.03, 0.36, 0.42, 0.64, col)
        fill(
            lambda p, v: cv2.fillConvexPoly(
                p,
                np.array([P(0.42, 0.38), P(0.97, 0.45), P(0.97, 0.55), P(0.42, 0.62)]),
                _bgr(light) if v is None else v,
            )
        )
    elif k == "bottle":
        rect(0.26, 0.36, 0.74, 0.96, col)
        rect(0.39, 0.13, 0.61, 0.38, col)
        if closed:
            rect(0.35, 0.03, 0.65, 0.15, (60, 60, 60))
    elif k == "spoon":
        fill(lambda p, v: cv2.line(p, P(0.12, 0.9), P(0.56, 0.46), _bgr(col) if v is None else v, int(0.13 * s)))
        ellipse(0.67, 0.33, 0.24, 0.16, 0, 360, col, angle=-45)
        ellipse(0.67, 0.33, 0.15, 0.08, 0, 360, light, angle=-45)
    img = np.dstack([colour_plane, alpha_plane])
    small = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    small[..., 3] /= 255.0
    return small


def _paste(dst: np.ndarray, sprite: np.ndarray, cx: float, cy: float) -> None:
    """Alpha-blend a sprite centred at (cx, cy) into dst, clipped to dst."""
    h, w = sprite.shape[:2]
    x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
    X0, Y0, X1, Y1 = max(x0, 0), max(y0, 0), min(x0 + w, dst.shape[1]), min(y0 + h, dst.shape[0])
    if X0 >= X1 or Y0 >= Y1:
        return
    sp = sprite[Y0 - y0 : Y1 - y0, X0 - x0 : X1 - x0]
    region = dst[Y0:Y1, X0:X1].astype(np.float32)
    a = sp[..., 3:4]
    dst[Y0:Y1, X0:X1] = (region * (1 - a) + sp[..., :3] * a + 0.5).astype(np.uint8)


def _background(plan: VideoPlan) -> np.ndarray:
    """Wood table with grain and a tiled wall at the top: texture for optical flow, low contrast so
    objects stay easy to recognise."""
    g = plan.geom
    cw, ch = g.canvas_size
    rng = _rng(plan.seed, plan.index, RENDER)
    wood = np.array(_bgr((150, 108, 70)), dtype=np.float32) + rng.uniform(-12, 12, 3)
    low = cv2.resize(
        rng.normal(size=(ch // 16 + 2, cw // 16 + 2)).astype(np.float32), (cw, ch), interpolation=cv2.INTER_CUBIC
    )
    yy = np.arange(ch, dtype=np.float32)[:, None]
    grain = np.sin(2 * np.pi * (yy / (0.37 * g.cell) + 0.6 * low))
    shade = 5.0 * low + 3.0 * grain + rng.normal(0, 2.0, (ch, cw)).astype(np.float32)
    canvas = wood[None, None, :] + shade[..., None]
    wall_y = int(g.cell_centre(0, WALL_ROWS)[1] - g.cell / 2)
    wall = np.array(_bgr((196, 202, 210)), dtype=np.float32) + rng.normal(0, 2.5, (wall_y, cw, 1))
    tile = max(4, int(g.cell * 0.75))
    wall[::tile, :, :] -= 35
    wall[:, ::tile, :] -= 35
    canvas[:wall_y] = wall
    canvas[wall_y : wall_y + max(2, g.cell // 8)] *= 0.6  # the table's edge
    return np.clip(canvas, 0, 255).astype(np.uint8)


class _Sprites:
    def __init__(self, cell: int):
        self.cell = cell
        self.cache: dict[tuple, np.ndarray] = {}

    def get(self, thing: Thing, closed: bool, scale: float = 1.0) -> np.ndarray:
        key = (thing, closed, scale)
        if key not in self.cache:
            self.cache[key] = _sprite(thing, closed, max(4, int(round(self.cell * scale))))
        return self.cache[key]


def _table_with_objects(
    plan: VideoPlan, background: np.ndarray, state: list[ObjectState], sprites: _Sprites
) -> np.ndarray:
    canvas = background.copy()
    g = plan.geom
    order = sorted(range(len(state)), key=lambda i: state[i].inside is not None)  # receptacles first
    for i in order:
        s = state[i]
        if s.cell is None:
            continue
        centre = g.cell_centre(*s.cell)
        if s.inside is None:
            _paste(canvas, sprites.get(plan.things[i], s.closed), *centre)
        else:
            small = sprites.get(plan.things[i], s.closed, INSIDE_SCALE)
            _paste(canvas, small, centre[0], centre[1] - 0.08 * g.cell)
    return canvas


def _draw_arm(img: np.ndarray, shoulder: np.ndarray, palm: np.ndarray, cell: int) -> None:
    shade = _bgr(_mix(SKIN, (0, 0, 0), 0.18))
    p0 = tuple(int(round(v)) for v in shoulder)
    p1 = tuple(int(round(v)) for v in palm)
    cv2.line(img, p0, p1, shade, max(2, int(ARM_W * cell)), cv2.LINE_AA)
    cv2.circle(img, p1, max(2, int(PALM_R * cell)), _bgr(SKIN), -1, cv2.LINE_AA)
    direction = np.subtract(palm, shoulder)
    direction = direction / (np.linalg.norm(direction) + 1e-6)
    tip = palm + direction * PALM_R * cell * 1.1
    cv2.circle(img, tuple(int(round(v)) for v in tip), max(1, int(0.13 * cell)), _bgr(SKIN), -1, cv2.LINE_AA)


def render_frames(plan: VideoPlan) -> Iterator[np.ndarray]:
    """The video's frames (BGR uint8, height x width x 3), in order. Depends on the plan only."""
    g = plan.geom
    kin = Kinematics(plan)
    t = np.arange(plan.num_frames) / plan.fps
    cam = np.round(kin.camera(t)).astype(int)
    right, left = kin.right_hand(t), kin.left_hand(t)
    epochs = plan.epoch(t)
    background = _background(plan)
    sprites = _Sprites(g.cell)
    r_shoulder, l_shoulder = g.square_px(*RIGHT_SHOULDER), g.square_px(*LEFT_SHOULDER)
    table, table_epoch = None, -1
    for i in range(plan.num_frames):
        e = int(epochs[i])
        if e != table_epoch:
            table, table_epoch = _table_with_objects(plan, background, plan.states[e], sprites), e
        x, y = cam[i]
        frame = table[y : y + g.height, x : x + g.width].copy()
        _draw_arm(frame, l_shoulder, left[i], g.cell)
        held = plan.held[e]
        if held is not None:
            spot = right[i] + np.multiply(HELD_OFFSET, g.cell)
            _paste(frame, sprites.get(plan.things[held], plan.states[e][held].closed), *spot)
        _draw_arm(frame, r_shoulder, right[i], g.cell)
        yield frame


def write_video(path: Path, frames: Iterator[np.ndarray], fps: float, size: tuple[int, int]) -> int:
    """Write frames with OpenCV's mp4v encoder; returns the number written."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC), float(fps), size)
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot open an {FOURCC} video writer")
    n = 0
    try:
        for frame in frames:
            writer.write(frame)
            n += 1
    finally:
        writer.release()
    return n


# --- gaze ---------------------------------------------------------------------------------------------

WORLD, HAND, FRAME = 0, 1, 2  # what a fixation is anchored to


def _gaze_segments(
    plan: VideoPlan, kin: Kinematics, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Fixation segments: start times, anchor kind, anchor point (world px, palm offset or frame px),
    and the indices of wander segments (candidates for out-of-frame excursions)."""
    g = plan.geom
    starts: list[float] = []
    kinds: list[int] = []
    points: list[np.ndarray] = []
    wander_idx: list[int] = []

    def jitter() -> np.ndarray:  # people do not fixate an object's exact centre
        return rng.normal(0, 0.12 * g.cell, 2)

    def wander(t0: float, t1: float) -> None:
        while t1 - t0 > 0.15:
            dur = min(float(rng.uniform(0.25, 0.7)), t1 - t0)
            e = int(plan.epoch(np.array([t0]))[0])
            cam = kin.camera(np.array([t0]))[0]
            options = []
            for s in plan.states[e]:
                if s.cell is None:
                    continue
                world = g.cell_centre(*s.cell)
                # in view (inside the centre square, not at its very edge)
                cx, cy = (world - cam - g.origin) / g.cell
                if 0.3 <= cx <= GRID - 0.3 and 0.3 <= cy <= GRID - 0.3:
                    options.append((WORLD, world))
            if plan.held[e] is not None:
                options.append((HAND, np.multiply(HELD_OFFSET, g.cell)))
            if options and rng.random() < 0.85:
                kind, point = options[int(rng.integers(0, len(options)))]
            else:  # a look at the bare table
                kind, point = WORLD, cam + g.square_px(*rng.uniform(1, GRID - 1, 2))
            starts.append(t0)
            kinds.append(kind)
            points.append(point + jitter())
            if dur >= 0.3:
                wander_idx.append(len(starts) - 1)
            t0 += dur

    cursor = 0.0
    for n, a in enumerate(plan.actions):
        wander(cursor, a.gaze_shift_s)
        starts.append(a.gaze_shift_s)
        kinds.append(WORLD)
        points.append(g.cell_centre(*a.cell) + jitter())
        next_shift = plan.actions[n + 1].gaze_shift_s if n + 1 < len(plan.actions) else plan.duration_s
        cursor = min(a.contact_s + float(rng.uniform(0.2, 0.5)), next_shift)
    wander(cursor, plan.duration_s)
    return np.array(starts), np.array(kinds), np.array(points, dtype=float).reshape(-1, 2), wander_idx


def _anchor(kinds: np.ndarray, points: np.ndarray, seg: np.ndarray, t: np.ndarray, kin: Kinematics) -> np.ndarray:
    k = kinds[seg]
    p = points[seg].copy()
    if (k == WORLD).any():
        p[k == WORLD] -= kin.camera(t[k == WORLD])
    if (k == HAND).any():
        p[k == HAND] += kin.right_hand(t[k == HAND])
    return p


def simulate_gaze(plan: VideoPlan, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """The video's Ego4D gaze CSV as a table, and counts of the quirks it contains."""
    g = plan.geom
    kin = Kinematics(plan)
    starts, kinds, points, wander_idx = _gaze_segments(plan, kin, rng)
    # Out-of-frame excursions replace some wandering glances: a look off the table.
    n_exc = min(len(wander_idx), 1 + int(rng.random() < 0.5))
    excursions = [wander_idx[i] for i in rng.choice(len(wander_idx), n_exc, replace=False)] if n_exc else []
    for s in excursions:
        side = int(rng.integers(0, 3))
        fx = [rng.uniform(-0.3, -0.08), rng.uniform(1.08, 1.3), rng.uniform(0.2, 0.8)][side] * g.width
        fy = [rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(-0.3, -0.08)][side] * g.height
        kinds[s], points[s] = FRAME, (fx, fy)
    n = int(plan.duration_s * plan.gaze_hz)
    t = (np.arange(n) + rng.uniform(-0.2, 0.2, n)) / plan.gaze_hz
    t[0] = abs(t[0])
    seg = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(starts) - 1)
    pos = _anchor(kinds, points, seg, t, kin)
    # Saccades: 30-60 ms sweeps from where the previous fixation ended.
    sweep = rng.uniform(0.03, 0.06, len(starts))
    prev_end = np.zeros_like(points)
    if len(starts) > 1:
        prev_end[1:] = _anchor(kinds, points, np.arange(len(starts) - 1), starts[1:], kin)
    since = t - starts[seg]
    moving = (seg > 0) & (since < sweep[seg])
    u = (since[moving] / sweep[seg][moving])[:, None]
    pos[moving] = prev_end[seg[moving]] + u * (pos[moving] - prev_end[seg[moving]])
    pos += rng.normal(0, 0.0035 * g.width, pos.shape)
    conf = rng.uniform(0.82, 1.0, n)
    # Blinks: low confidence and a scrambled position, as eye trackers report them.
    blinks = np.cumsum(np.r_[rng.uniform(0.5, 3.0), rng.uniform(2.0, 6.0, int(plan.duration_s / 2) + 1)])
    blinks = blinks[blinks < plan.duration_s - 0.3]  # every 2-6 s, as people blink
    n_blinks = len(blinks)
    for b0 in blinks:
        m = (t >= b0) & (t < b0 + rng.uniform(0.1, 0.3))
        conf[m] = rng.uniform(0.0, 0.4, int(m.sum()))
        pos[m] += rng.normal(0, 0.08 * g.width, (int(m.sum()), 2))
    # Untracked stretches: rows missing altogether.
    keep = np.ones(n, dtype=bool)
    n_gaps = 1 + int(rng.random() < 0.5)
    for g0 in rng.uniform(0, max(plan.duration_s - 1.0, 0.1), n_gaps):
        keep &= ~((t >= g0) & (t < g0 + rng.uniform(0.2, 0.8)))
    t, pos, conf = t[keep], pos[keep], conf[keep]
    nx = pos[:, 0] / g.width
    ny = 1.0 - pos[:, 1] / g.height  # Ego4D's origin is the bottom-left corner
    table = pd.DataFrame({c: np.full(len(t), np.nan) for c in ego4d.GAZE_COLUMNS})
    table["component_idx"] = 0
    table["component_timestamp_s"] = t
    table["canonical_timestamp_s"] = t
    table["world_index"] = np.clip(np.round(t * plan.fps), 0, plan.num_frames - 1).astype(np.int64)
    table["confidence"] = conf
    table["norm_pos_x"] = nx
    table["norm_pos_y"] = ny
    quirks = {
        "samples": int(len(t)),
        "blinks": n_blinks,
        "untracked_gaps": n_gaps,
        "out_of_frame_excursions": len(excursions),
        "out_of_frame_samples": int(((nx < 0) | (nx > 1) | (ny < 0) | (ny > 1)).sum()),
    }
    return table, quirks


# --- files -------------------------------------------------------------------------------------------


def write_gaze_csv(path: Path, table: pd.DataFrame) -> None:
    """Write an Ego4D gaze table with fixed formatting (byte-identical for identical values); the
    columns that carry no data in Ego4D are left empty."""
    data_cols = ego4d.GAZE_DATA.names
    empty = "," * (len(ego4d.GAZE_COLUMNS) - len(data_cols))
    rows = zip(*(table[c].to_numpy() for c in data_cols), strict=False)
    lines = [f"{int(ci)},{ct:.6f},{t:.6f},{int(wi)},{c:.6f},{x:.6f},{y:.6f}{empty}" for ci, ct, t, wi, c, x, y in rows]
    path.write_text(",".join(ego4d.GAZE_COLUMNS) + "\n" + "\n".join(lines) + "\n")


def _metadata_entry(plan: VideoPlan) -> dict:
    duration = round(plan.duration_s, 6)
    return {
        "video_uid": plan.uid,
        "duration_sec": duration,
        "has_gaze": True,
        "split_em": None,
        "split_av": None,
        "split_fho": None,
        "scenarios": ["Cooking"],
        "video_metadata": {
            "fps": plan.fps,
            "num_frames": plan.num_frames,
            "display_resolution_width": plan.geom.width,
            "display_resolution_height": plan.geom.height,
            "mp4_duration_sec": duration,
            "video_codec": "mpeg4",
        },
    }


def _narration_entry(plan: VideoPlan, seed: int) -> dict:
    rng = _rng(seed, plan.index, NARRATION)

    def items(jitter_s: float) -> list[dict]:
        out = []
        for t, text in plan.narrations:
            ts = float(np.clip(t + (rng.normal(0, jitter_s) if jitter_s else 0.0), 0, plan.duration_s))
            out.append(
                {
                    "timestamp_sec": round(ts, 4),
                    "timestamp_frame": int(round(ts * plan.fps)),
                    "narration_text": text,
                    "annotation_uid": str(uuid.UUID(bytes=rng.bytes(16), version=4)),
                }
            )
        return out

    summary = [
        {
            "start_sec": 0.0,
            "end_sec": round(plan.duration_s, 4),
            "summary_text": "#Summary C moves objects around on a table",
        }
    ]
    # A second annotator narrates the same actions with their own timing, as in Ego4D's two passes.
    return {
        "narration_pass_1": {"narrations": items(0.0), "summaries": summary},
        "narration_pass_2": {"narrations": items(0.15), "summaries": summary},
        "status": "complete",
    }


def write_one(sp: SampleParams, index: int, vdir: Path) -> dict:
    """Write one video's mp4 and gaze CSV; return its ego4d.json entry, narration entry and summary."""
    plan = plan_video(sp, index)
    g = plan.geom
    video = vdir / "full_scale" / f"{plan.uid}.mp4"
    written = write_video(video, render_frames(plan), plan.fps, (g.width, g.height))
    probe = ego4d.probe_video(video)
    if written != plan.num_frames or probe.num_frames != plan.num_frames:
        raise RuntimeError(
            f"{video}: wrote {written} frames, OpenCV reads back {probe.num_frames}, expected {plan.num_frames}"
        )
    gaze, quirks = simulate_gaze(plan, _rng(sp.seed, index, GAZE))
    write_gaze_csv(vdir / ego4d.GAZE_DIR / f"{plan.uid}.csv", gaze)
    verbs = {v: sum(a.verb == v for a in plan.actions) for v in VERBS}
    summary = {
        "uid": plan.uid,
        "frames": plan.num_frames,
        "objects": ", ".join(t.name for t in plan.things),
        "actions": len(plan.actions),
        "verbs": verbs,
        "narrations": len(plan.narrations),
        **quirks,
    }
    return {"metadata": _metadata_entry(plan), "narration": _narration_entry(plan, sp.seed), "summary": summary}


def _clear(vdir: Path) -> None:
    """Remove a previous synthetic world; refuse to touch anything else (e.g. a real Ego4D download)."""
    if not vdir.exists():
        return
    meta = vdir / ego4d.METADATA_FILE
    try:
        synthetic = json.loads(meta.read_text()).get("synthetic") is not None
    except (OSError, json.JSONDecodeError, AttributeError):
        synthetic = False
    if not synthetic and any(vdir.iterdir()):
        raise FileExistsError(
            f"{vdir}: exists and is not a synthetic world (no `synthetic` key in "
            f"{meta}); refusing to overwrite it. Point params.sample.root elsewhere."
        )
    shutil.rmtree(vdir)


def write_world(sp: SampleParams, workers: int = 1) -> dict:
    """Write the whole world under sp.root/v2; returns the per-video summaries and the vocabulary."""
    vdir = ego4d.version_dir(sp.root, ego4d.EGO4D_VERSION)
    _clear(vdir)
    for sub in (ego4d.GAZE_DIR, "full_scale", "annotations"):
        (vdir / sub).mkdir(parents=True, exist_ok=True)
    if sp.videos < 1:
        raise ValueError(f"params.sample.videos = {sp.videos}: need at least one video")
    if workers > 1 and sp.videos > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(write_one, [sp] * sp.videos, range(sp.videos), [vdir] * sp.videos))
    else:
        results = [write_one(sp, i, vdir) for i in range(sp.videos)]
    (vdir / ego4d.METADATA_FILE).write_text(
        json.dumps(
            {
                "date": "synthetic",
                "version": ego4d.EGO4D_VERSION,
                "description": "gazevlm synthetic egocentric world (not Ego4D data)",
                "synthetic": {
                    "generator": "gazevlm.synthetic",  # the old module name, kept: the same bytes
                    **{
                        k: getattr(sp, k)
                        for k in ("seed", "videos", "seconds", "width", "height", "fps", "gaze_hz", "objects", "cue")
                    },
                },
                "videos": [r["metadata"] for r in results],
            },
            indent=1,
        )
    )
    (vdir / ego4d.NARRATION_FILE).write_text(
        json.dumps({r["metadata"]["video_uid"]: r["narration"] for r in results}, indent=1)
    )
    return {"per_video": [r["summary"] for r in results]}


def vocabulary() -> list[str]:
    """Every word a narration of the world can use."""
    words = {w for tpl in TEMPLATES.values() for w in tpl.replace("{obj}", "").replace("{dest}", "").split()}
    return sorted(words | set(COLOURS) | set(KINDS))


def run(params: Params) -> dict:
    """Stage `sample`: write the synthetic world in the Ego4D layout; report in reports/sample.json."""
    sp = params.sample
    workers = max(1, min(os.cpu_count() or 1, 2))
    written = write_world(sp, workers=workers)
    per_video = written["per_video"]
    verbs = {v: sum(p["verbs"][v] for p in per_video) for v in VERBS}
    report = {
        "root": str(ego4d.version_dir(sp.root)),
        "seed": sp.seed,
        "videos": sp.videos,
        "seconds": sp.seconds,
        "fps": sp.fps,
        "width": sp.width,
        "height": sp.height,
        "gaze_hz": sp.gaze_hz,
        "objects": sp.objects,
        "cue": sp.cue,
        "cell_px": Geometry.of(sp).cell,
        "frames": sum(p["frames"] for p in per_video),
        "actions": sum(p["actions"] for p in per_video),
        "narrations": sum(p["narrations"] for p in per_video),
        "verbs": verbs,
        "vocabulary": vocabulary(),
        "gaze": {
            k: sum(p[k] for p in per_video)
            for k in ("samples", "blinks", "untracked_gaps", "out_of_frame_excursions", "out_of_frame_samples")
        },
        "per_video": {p["uid"]: {k: v for k, v in p.items() if k != "uid"} for p in per_video},
    }
    atomic.write_json(REPORTS_DIR / "sample.json", report, trailing_newline=False)
    return report


# --- figures -----------------------------------------------------------------------------------------


def read_frames(video: str | Path, frames: Sequence[int]) -> dict[int, np.ndarray]:
    """The given frame indices as RGB images (video_frames.read_frames, strict)."""
    return {i: cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for i, f in video_frames.read_frames(video, frames, strict=True)}


def plot_frames(
    root: str | Path, uid: str | None = None, seconds: Sequence[float] = (2, 4, 6, 8, 10, 12), grid: bool = True
):
    """A few frames of one video with the narration nearest each (and the model's patch grid)."""
    import matplotlib.pyplot as plt

    vdir = ego4d.version_dir(root)
    meta = ego4d.read_metadata(vdir)
    uid = uid or sorted(meta)[0]
    m = meta[uid]
    frames = [min(int(round(s * m.fps)), m.num_frames - 1) for s in seconds]
    images = read_frames(vdir / "full_scale" / f"{uid}.mp4", frames)
    narr = ego4d.read_narrations(root)
    narr = narr[(narr.uid == uid) & (narr["pass"] == "narration_pass_1")]
    fig, axes = plt.subplots(1, len(frames), figsize=(2.6 * len(frames), 3.1), squeeze=False)
    side = min(m.width, m.height)
    cell = side // GRID
    ox, oy = (m.width - GRID * cell) // 2, (m.height - GRID * cell) // 2
    for ax, f in zip(axes[0], frames, strict=False):
        ax.imshow(images[f])
        if grid:
            for k in range(GRID + 1):
                ax.axvline(ox + k * cell, color="w", lw=0.3, alpha=0.5)
                ax.axhline(oy + k * cell, color="w", lw=0.3, alpha=0.5)
        t = f / m.fps
        near = narr.iloc[(narr.timestamp_sec - t).abs().argsort()[:1]] if len(narr) else narr
        caption = near.text.iloc[0].replace("#C C ", "") if len(near) else ""
        ax.set_title(f"t={t:.0f}s\n{caption}", fontsize=7)
        ax.axis("off")
    fig.suptitle(f"{uid}: frames (gaze is never drawn into the video)", fontsize=8)
    fig.tight_layout()
    return fig


def plot_gaze_trace(root: str | Path, uid: str | None = None, until_s: float | None = 20.0):
    """The raw gaze CSV of one video: norm_pos x / y (bottom-left origin) and confidence over time,
    with the narrations as vertical lines."""
    import matplotlib.pyplot as plt

    vdir = ego4d.version_dir(root)
    uid = uid or sorted(ego4d.read_metadata(vdir))[0]
    gaze = pd.read_csv(vdir / ego4d.GAZE_DIR / f"{uid}.csv")
    if until_s is not None:
        gaze = gaze[gaze.canonical_timestamp_s <= until_s]
    narr = ego4d.read_narrations(root)
    narr = narr[(narr.uid == uid) & (narr["pass"] == "narration_pass_1")]
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(10, 4), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    t = gaze.canonical_timestamp_s
    ax.plot(t, gaze.norm_pos_x, ".", ms=1, label="norm_pos_x")
    ax.plot(t, gaze.norm_pos_y, ".", ms=1, label="norm_pos_y (0 = bottom)")
    ax.axhspan(0, 1, color="0.9", zorder=-1)
    for ts in narr.timestamp_sec:
        if until_s is None or ts <= until_s:
            ax.axvline(ts, color="k", lw=0.4, alpha=0.4)
            axc.axvline(ts, color="k", lw=0.4, alpha=0.4)
    ax.set_ylabel("normalised position")
    ax.legend(loc="upper right", fontsize=7, markerscale=8)
    axc.plot(t, gaze.confidence, ".", ms=1, color="tab:red")
    axc.set_ylabel("confidence")
    axc.set_xlabel("time (s); grey band = inside the frame; vertical lines = narrations")
    fig.suptitle(
        f"{uid}: gaze at {len(gaze) / max(t.max() - t.min(), 1e-9):.0f} Hz with blinks, gaps and "
        "out-of-frame excursions",
        fontsize=8,
    )
    fig.tight_layout()
    return fig
