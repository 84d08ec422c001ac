"""What a build is asked for: :class:`BuildOptions`, their checks, and the content fingerprint.

The defaults here are the CLI's defaults (``pipeline build --help`` shows them from this class).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from .. import __version__, storage
from ..errors import UserError

__all__ = [
    "POSE_CHOICES",
    "POSES_FPS_HELP",
    "BuildError",
    "OptionError",
    "BuildOptions",
    "check_options",
    "default_of",
]

POSE_CHOICES = ("mediapipe", "mmpose", "precomputed")
POSES_FPS_HELP = "auto|native|N"


class BuildError(UserError):
    """A user mistake that stops the build before it starts (one-line message)."""


class OptionError(BuildError):
    """Options that cannot go together or a value out of range: a command-line mistake (the
    CLI exits 2, as for what click itself refuses)."""


@dataclass
class BuildOptions:
    dataset: str
    videos: str
    out: str
    annotations: str | None = None
    split: str | None = None
    classes: str | None = None
    pose: str = "mediapipe"
    poses: str | None = None
    poses_fps: str = "auto"
    layout: str | None = None
    protocol: str | None = None
    ray_address: str | None = None
    num_workers: int | None = None
    samples_per_shard: int | None = None
    frame_stride: int = 2  # docs/design.md, "Time": the build keeps every 2nd source frame
    short_side: int = 256  # stored frame short side (TSM/mmaction's 256 before 224 crops)
    limit: int | None = None
    seed: int = 0
    overwrite: bool = False
    pose_options: dict[str, Any] = field(default_factory=dict)
    max_calls: int = 16  # shard tasks per worker process before Ray recycles it (memory)
    verbose: bool = False
    # Failed videos (errors.parquet) over all videos asked for, beyond which the build exits
    # EXIT_FAILED rather than EXIT_PARTIAL: copies of Kinetics-400 in circulation lack about
    # 2-3 % of the listed videos (240k of 246k training videos is typical) and a few more do
    # not decode, so 5 % flags a broken input without failing every real Kinetics build.
    max_error_fraction: float = 0.05
    retry_errors: bool = False  # reprocess only the videos in errors.parquet
    setup_timeout: float = 120.0  # seconds to wait for the first pose actor to be ready

    def fingerprint(self) -> dict[str, Any]:
        """The options that decide the content of the output (compared on resume).

        The pipeline version is part of it: a resume with another version could mix shards
        made by two versions of the code.
        """
        keys = (
            "dataset", "split", "pose", "poses_fps", "layout", "protocol", "samples_per_shard",
            "frame_stride", "short_side", "limit", "seed",
        )  # fmt: skip
        # Pose backend options (model configs and checkpoints) decide the keypoints too.
        pose_options = {k: _describe(v) for k, v in sorted(self.pose_options.items())}
        return {k: getattr(self, k) for k in keys} | {
            "pose_options": pose_options,
            # The code and the plausibility rules in effect (defaults included) decide the
            # keypoints too: a resume under another version or other rules is refused.
            "pipeline_version": __version__,
            "person_rules": self.person_rules(),
        }

    def person_rules(self) -> dict[str, Any] | None:
        """The pose backend's plausibility rules as a dict (None: it applies none)."""
        if self.pose not in ("mediapipe", "mmpose"):
            return None
        from ..pose import person_rules

        try:
            rules = person_rules(self.pose, self.pose_options)
        except ValueError as exc:
            raise BuildError(f"--pose-option: {exc}") from None
        return asdict(rules) if rules is not None else None


def default_of(name: str) -> Any:
    """The default of a :class:`BuildOptions` field (for the CLI's help and defaults)."""
    for f in fields(BuildOptions):
        if f.name == name:
            if f.default is MISSING:
                raise KeyError(f"BuildOptions.{name} has no default")
            return f.default
    raise KeyError(name)


def _describe(value: Any) -> Any:
    """A JSON value that stands for an option value (objects by their qualified name)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    name = getattr(value, "__qualname__", type(value).__qualname__)
    return f"<{getattr(value, '__module__', type(value).__module__)}.{name}>"


def check_options(options: BuildOptions) -> None:
    """Refuse what click cannot check (inputs that must exist, option combinations)."""
    from ..datasets import DATASETS
    from ..skeletons import LAYOUT_NAMES

    # Callers other than the CLI (benchmarks, tests, other programs) get the same checks.
    if options.dataset not in DATASETS:
        raise OptionError(f"--dataset must be one of {', '.join(DATASETS)}")
    if options.pose not in POSE_CHOICES:
        raise OptionError(f"--pose must be one of {', '.join(POSE_CHOICES)}")
    if options.pose == "precomputed" and not options.poses:
        raise OptionError("--pose precomputed needs --poses (where the pose files are)")
    if options.layout is not None and options.layout not in LAYOUT_NAMES:
        raise OptionError(f"--layout must be one of {', '.join(LAYOUT_NAMES)}")
    for name, low in (("frame_stride", 1), ("short_side", 16), ("samples_per_shard", 1),
                      ("limit", 1), ("num_workers", 1)):  # fmt: skip
        value = getattr(options, name)
        if value is not None and value < low:
            raise OptionError(f"--{name.replace('_', '-')} must be >= {low}")
    if not 0.0 <= options.max_error_fraction <= 1.0:
        raise OptionError("--max-error-fraction must be between 0 and 1")
    if options.retry_errors and options.overwrite:
        raise OptionError("--retry-errors and --overwrite exclude each other")
    if options.poses_fps not in ("auto", "native"):
        try:
            if float(options.poses_fps) <= 0:
                raise ValueError
        except ValueError:
            raise OptionError(f"--poses-fps must be {POSES_FPS_HELP} (a positive number)") from None
    for name in ("videos", "annotations", "poses", "classes"):
        url = getattr(options, name)
        if url and not storage.exists(url):
            raise BuildError(f"--{name} {url} does not exist")
