"""Pack audio folders into HDF5 shards plus a manifest: ``python -m trainer.prepare``.

Paired folders (clean/noisy or target/input), or with ``--kind speech|noise|rir --in-dir DIR`` one
corpus of single signals for on-the-fly mixing (:mod:`trainer.data.single`). The packing itself is
:mod:`trainer.data.pack`; the format is :mod:`trainer.data.format`.
"""

from __future__ import annotations

import argparse
import os
import sys

from trainer.core.exitcodes import EXIT_BAD_INPUT
from trainer.data.format import SINGLE_KINDS, DataError
from trainer.data.pack import DEFAULT_SPEAKER_PATTERN, prepare
from trainer.data.single import SPEECH_SPEAKER_PATTERN, prepare_single


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.prepare",
        description="Pack paired audio folders (matched by file name) into HDF5 shards plus manifest.json. "
                    "With --valid-speakers, OUT/train and OUT/valid; else OUT itself. Re-running after a "
                    "crash skips complete shards. Bad input: one line naming the file, exit code 2.")
    parser.add_argument("--clean-dir", help="clean speech folder (pairs matched by file name)")
    parser.add_argument("--noisy-dir", help="noisy speech folder")
    parser.add_argument("--target-dir", help="creative variant: target folder (instead of --clean-dir)")
    parser.add_argument("--input-dir", help="creative variant: input folder (instead of --noisy-dir)")
    parser.add_argument("--kind", choices=SINGLE_KINDS, default=None,
                        help="pack one corpus for on-the-fly mixing (with --in-dir): speech, noise or rir")
    parser.add_argument("--in-dir", help="--kind: the corpus folder (any depth; DNS-Challenge trees as they are)")
    parser.add_argument("--valid-fraction", type=float, default=0.0,
                        help="--kind: hold out this fraction as OUT/valid (speech: of the speakers; noise/rir: "
                             "of the files)")
    parser.add_argument("--max-rir-seconds", type=float, default=4.0, help="--kind rir: longer RIRs are refused")
    parser.add_argument("--out", required=True, help="output folder (shards + manifest.json)")
    parser.add_argument("--sample-rate", type=int, default=16000, help="target rate; other rates are resampled")
    parser.add_argument("--shard-size-mb", type=float, default=256, help="approximate size of one shard")
    parser.add_argument("--valid-speakers", default="", help="comma-separated speakers held out as OUT/valid")
    parser.add_argument("--speaker-pattern", default=None,
                        help="regex on the file name; its first group (or the match) is the speaker "
                             "(default: the part before the first '_'; --kind speech: DNS's reader_NNNNN, "
                             "else the part before the first '_')")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="parallel processes")
    parser.add_argument("--channel", type=int, default=None, help="pick this channel (0-based) of multi-channel files")
    parser.add_argument("--drop-silent", action="store_true", help="drop silent pairs (default: keep and warn)")
    parser.add_argument("--silence-threshold", type=float, default=1e-4, help="peak below which a file is silent")
    parser.add_argument("--length-tolerance-ms", type=float, default=10.0,
                        help="pairs whose lengths differ by at most this are trimmed to the shorter; more is an error")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.kind is not None or args.in_dir is not None:
        return _single(parser, args)
    se = args.clean_dir is not None or args.noisy_dir is not None
    creative = args.target_dir is not None or args.input_dir is not None
    if se == creative or (se and not (args.clean_dir and args.noisy_dir)) or \
            (creative and not (args.target_dir and args.input_dir)):
        parser.error("give either --clean-dir and --noisy-dir, or --target-dir and --input-dir")
    first, second, signals = ((args.clean_dir, args.noisy_dir, ("clean", "noisy")) if se
                              else (args.target_dir, args.input_dir, ("target", "input")))
    try:
        prepare(first, second, args.out, signals=signals, sample_rate=args.sample_rate,
                shard_size_mb=args.shard_size_mb, workers=args.workers, channel=args.channel,
                valid_speakers=[s for s in args.valid_speakers.split(",") if s],
                speaker_pattern=args.speaker_pattern or DEFAULT_SPEAKER_PATTERN, drop_silent=args.drop_silent,
                silence_threshold=args.silence_threshold, length_tolerance_ms=args.length_tolerance_ms,
                progress=not args.no_progress)
    except DataError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, even if libsndfile's isn't
        return EXIT_BAD_INPUT
    return 0


def _single(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if not (args.kind and args.in_dir) or any((args.clean_dir, args.noisy_dir, args.target_dir, args.input_dir)):
        parser.error("--kind and --in-dir go together, without --clean-dir/--noisy-dir/--target-dir/--input-dir")
    try:
        prepare_single(args.kind, args.in_dir, args.out, sample_rate=args.sample_rate,
                       shard_size_mb=args.shard_size_mb, workers=args.workers, channel=args.channel,
                       valid_speakers=[s for s in args.valid_speakers.split(",") if s],
                       valid_fraction=args.valid_fraction,
                       speaker_pattern=args.speaker_pattern or SPEECH_SPEAKER_PATTERN,
                       drop_silent=args.drop_silent, silence_threshold=args.silence_threshold,
                       max_rir_seconds=args.max_rir_seconds, progress=not args.no_progress)
    except DataError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
