"""Probe only: the hard synthetic variant with its nuisances scaled down, to find what makes it unlearnable
(results/hard_probe/README.md).

    python -m preprocess.eased_hard '{"tint_scale": 0.3, "pan_scale": 0, "actor_scale": 1.3}' \
        --variant hard --distractors 0 --out data/probe_easy --workers 1

The first argument is a JSON object of knobs applied to every drawn scene; the rest goes to
`python -m preprocess.synthetic`. --workers 1 is required: the knobs patch this process, and the writer's
worker processes are spawned fresh. Knobs (all optional):
  tint_scale    multiplies the background gratings' colour amplitudes (1: the variant's own)
  pan_scale     multiplies the camera's pan velocity and sway (0: a still camera)
  actor_scale   multiplies the actor's radius (1: 7-10 px at the 80x64 source size)
  actor_color   [R, G, B]: one colour for every actor instead of a random vivid one per video
Everything else (labels, motion laws, jitter, distractors, noise, encoding) is the variant's own.
"""
from __future__ import annotations

import json
import sys

import numpy as np

import preprocess.synthetic as synthetic


def eased(draw, knobs: dict):
    def draw_scene(rng, label, **kwargs):
        scene = draw(rng, label, **kwargs)
        bg, cam, actor = scene.background, scene.camera, scene.actor
        pan = knobs.get("pan_scale", 1.0)
        camera = synthetic.Camera(velocity=tuple(np.array(cam.velocity) * pan), sway=tuple(np.array(cam.sway) * pan),
                                  sway_period=cam.sway_period, sway_phase=cam.sway_phase, depth=cam.depth)
        background = synthetic.Background(bg.base, bg.freqs, bg.phases, bg.omegas,
                                          bg.colors * knobs.get("tint_scale", 1.0))
        color = tuple(knobs["actor_color"]) if "actor_color" in knobs else actor.color
        actor = synthetic.MovingShape(actor.shape, actor.radius * knobs.get("actor_scale", 1.0), color, actor.motion,
                                      actor.x0, actor.y0, actor.speed, actor.angle, actor.amplitude, actor.period,
                                      actor.phase, actor.warp)
        return synthetic.HardScene(scene.frames, scene.width, scene.height, background, camera, scene.distractors,
                                   actor, scene.noise_seed)

    return draw_scene


KNOBS = ("tint_scale", "pan_scale", "actor_scale", "actor_color")


def parse_knobs(text: str) -> dict:
    """The JSON object of knobs; ValueError with a one-line reason otherwise."""
    try:
        knobs = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"knobs are not JSON ({e})") from None
    if not isinstance(knobs, dict):
        raise ValueError(f"knobs must be a JSON object, got {text!r}")
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown knob {unknown[0]!r}; valid: {', '.join(KNOBS)}")
    return knobs


def main(argv: list[str] | None = None) -> int:
    """`python -m preprocess.eased_hard KNOBS_JSON [preprocess.synthetic options]`; exit 2 on bad knobs."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        knobs = parse_knobs(args[0] if args else "")
    except ValueError as e:
        print(f"error: {e} (usage: python -m preprocess.eased_hard KNOBS_JSON --variant hard --out DIR "
              "--workers 1 ...)", file=sys.stderr)
        return 2
    synthetic.draw_hard_scene = eased(synthetic.draw_hard_scene, knobs)
    return synthetic.main(args[1:])


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
