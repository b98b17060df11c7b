"""The participant and group levels: orchestration only.

For each participant and session, in isolation: check the images, preprocess them (Nipype),
run the network, map the probability map back to the reference contrast's native grid, and
write the derivatives; then one HTML report per participant.  A failure writes a crash file in
``OUTPUT_DIR/logs/`` and the other sessions go on; the exit status says whether any failed.
"""
from __future__ import annotations

import logging
import time
import os
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from bids_mdpp.config import RunConfig
from bids_mdpp.errors import (
    EXIT_OK,
    EXIT_PARTICIPANT_FAILED,
    BidsMdppError,
    BidsValidationError,
    NoInputError,
    OutputError,
)
from bids_mdpp.session import SessionInputs

LOGGER = logging.getLogger("bids_mdpp.participant")


def prepare_output_dir(output_dir: Path) -> None:
    """Create OUTPUT_DIR and prove it is writable (else OutputError, exit 73/74)."""
    from bids_mdpp.imageio import write_text

    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{output_dir}: cannot create the output folder ({exc.strerror})") from exc
    probe = write_text("", output_dir / "logs" / ".write-test")
    probe.unlink()


def check_bids_dir(bids_dir: Path, skip_validation: bool) -> None:
    """The input exists and is a BIDS dataset; validated unless ``skip_validation``."""
    if not bids_dir.exists():
        raise NoInputError(f"{bids_dir}: no such directory")
    if not bids_dir.is_dir():
        raise NoInputError(f"{bids_dir}: not a directory")
    if not skip_validation:
        from bids_mdpp.validation import validate_bids

        validate_bids(bids_dir)
    elif not (bids_dir / "dataset_description.json").exists():
        raise BidsValidationError(
            f"{bids_dir} is not a BIDS dataset: it has no dataset_description.json"
        )


def plugin_settings(config: RunConfig) -> tuple[str, dict]:
    """Nipype plugin and its arguments: the ``--use-plugin`` file, else MultiProc/Linear."""
    if config.plugin_file is not None:
        import yaml

        from bids_mdpp.errors import UsageError

        try:
            settings = yaml.safe_load(config.plugin_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"{config.plugin_file}: not a readable YAML plugin file ({exc})") from exc
        if not isinstance(settings, dict) or "plugin" not in settings:
            raise UsageError(f"{config.plugin_file}: a plugin file needs a 'plugin:' entry")
        return str(settings["plugin"]), dict(settings.get("plugin_args") or {})
    from bids_mdpp.workflows.preproc import nipype_plugin

    return nipype_plugin(config.nprocs, config.mem_gb)


def usable_inputs(inputs: SessionInputs, model_contrasts: tuple[str, ...]) -> SessionInputs:
    """Keep the contrasts the model knows; raise NoInputError when none is left.

    The message lists every anatomical file seen, so the user knows what was looked at.
    """
    seen = sorted({*inputs.files.values(), *inputs.ignored})
    where = inputs.key
    if not inputs.files:
        listing = ", ".join(p.name for p in seen) or "none"
        raise NoInputError(
            f"{where}: no usable anatomical image (T1w, ce-T1w, T2w, FLAIR or PDw); "
            f"anatomical files seen: {listing}"
        )
    unknown = [c for c in inputs.contrasts if c not in model_contrasts]
    for contrast in unknown:
        LOGGER.warning("%s: the model does not know %s; ignoring %s", where, contrast,
                       inputs.files[contrast].name)
    files = {c: p for c, p in inputs.files.items() if c in model_contrasts}
    if not files:
        raise NoInputError(
            f"{where}: the model knows {', '.join(model_contrasts)} but this session only has "
            f"{', '.join(inputs.contrasts)} ({', '.join(p.name for p in inputs.files.values())})"
        )
    ignored = tuple(sorted({*inputs.ignored, *(inputs.files[c] for c in unknown)}))
    return replace(inputs, files=files, ignored=ignored)


#: Below this real-scan DSC (model card) for the contrasts at hand, the run warns and the report
#: says to check the mask by eye.
LOW_REAL_SCAN_DSC = 0.3


def accuracy_caution(card, contrasts, intensity_model: str = "off") -> str | None:
    """A warning when the model card measured a low DSC on real scans for these contrasts
    (with the intensity model combined or not, as ``intensity_model`` says)."""
    dsc = card.real_scan_dsc(contrasts, intensity_model=intensity_model)
    if dsc is None or dsc >= LOW_REAL_SCAN_DSC:
        return None
    if intensity_model == "off":
        who = "this model"
    elif card.network_weight_for(contrasts) == 0.0:
        who = "the intensity model, which segments these contrasts alone with this model,"
    else:
        who = "this model combined with the intensity model"
    return (f"with only {', '.join(contrasts)}, {who} reached DSC {dsc:.2f} on a "
            f"real patient (model card); check the mask by eye, or use a model trained on "
            f"labelled scans with these contrasts (bids_mdpp train)")


def process_session(inputs: SessionInputs, config: RunConfig, loaded, predictor):
    """Segment one participant/session and write its derivatives; returns a SessionReport."""
    import nibabel as nib
    import numpy as np

    from bids_mdpp.imageio import load_image
    from bids_mdpp.intensity_model import combine_for_session
    from bids_mdpp.outputs import write_session_outputs
    from bids_mdpp.reports.participant import SessionReport
    from bids_mdpp.workflows.preproc import (boilerplate, probability_to_native,
                                             run_preprocessing)

    card = loaded.card
    usable = usable_inputs(inputs, tuple(card.contrasts))
    for path in usable.files.values():
        load_image(path)  # every bad-input check, naming the file
    plugin, plugin_args = plugin_settings(config)
    caution = accuracy_caution(card, usable.contrasts, config.intensity_model)
    if caution:
        LOGGER.warning("%s: %s", usable.key, caution)
    LOGGER.info("%s: preprocessing %s", usable.key, ", ".join(usable.contrasts))
    preproc = run_preprocessing(
        usable, config.effective_work_dir / usable.key, grid_mm=card.grid_mm, plugin=plugin,
        plugin_args=plugin_args, omp_nthreads=config.omp_nthreads,
    )
    volumes = {c: np.asarray(nib.load(p).dataobj, dtype=np.float32) for c, p in preproc.images.items()}
    brain = np.asarray(nib.load(preproc.brain_mask).dataobj) > 0

    def segment():
        LOGGER.info("%s: segmenting (modality code %s)", usable.key,
                    predictor.code_for(usable.contrasts))
        started = time.perf_counter()
        probability = predictor.predict(volumes, brain)
        LOGGER.info("%s: segmented in %.1f s (%s)", usable.key, time.perf_counter() - started,
                    predictor.precision_used)
        return probability

    if config.intensity_model == "off":
        probability, intensity, network_ran = segment(), {"Mode": "off"}, True
    else:
        # where the card gives the network no weight for these contrasts, it runs only if the
        # intensity model cannot be fitted
        network_weight = card.network_weight_for(usable.contrasts)
        network = segment if network_weight == 0.0 else segment()
        started = time.perf_counter()
        probability, intensity = combine_for_session(
            preproc, volumes, brain, network,
            cache_dir=config.effective_work_dir / "templates", network_weight=network_weight)
        network_ran = network_weight != 0.0 or "Skipped" in intensity
        if "Skipped" in intensity:
            skipped = ("the intensity model was skipped, so this map is the network's alone ("
                       f"{intensity['Skipped']})")
            caution = f"{caution}; {skipped}" if caution else skipped
        LOGGER.info("%s: intensity model fitted and combined in %.1f s", usable.key,
                    time.perf_counter() - started)
    inference = ({**predictor.settings} if network_ran else
                 {"NetworkSkipped": "the model card gives the network no weight for these "
                                    "contrasts with the intensity model"})
    inference["IntensityModel"] = intensity
    LOGGER.info("%s: writing outputs", usable.key)
    started = time.perf_counter()
    prob_native = probability_to_native(probability, preproc)
    threshold = card.threshold_for(usable.contrasts) if config.threshold_from_model else config.threshold
    outputs = write_session_outputs(
        config.output_dir, usable, preproc, prob_native, model_card=card.to_dict(),
        model_sha256=loaded.sha256, threshold=threshold, min_lesion_mm3=config.min_lesion_mm3,
        inference=inference,
    )
    LOGGER.info("%s: outputs written in %.1f s", usable.key, time.perf_counter() - started)
    LOGGER.info("%s: %d lesion(s), %.0f mm³", usable.key, outputs.summary["LesionCount"],
                outputs.summary["TotalLesionVolume"])
    if config.output_spaces:
        from bids_mdpp.outputs import provenance
        from bids_mdpp.spaces import write_space_outputs

        common = provenance(usable, preproc, card.to_dict(), loaded.sha256)
        for space in config.output_spaces:
            LOGGER.info("%s: registering to %s", usable.key, space)
            write_space_outputs(config.output_dir, usable, preproc, probability, space,
                                threshold=threshold, min_lesion_mm3=config.min_lesion_mm3,
                                native_mask=outputs.mask, common=common)
    return SessionReport(
        inputs=usable, preproc=preproc, outputs=outputs,
        boilerplate=boilerplate(usable.contrasts, preproc.reference), error=None,
        shipped_model=config.model_dir is None, caution=caution,
    )


def _threads(n: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
    except ImportError:
        pass


def run_participant_level(config: RunConfig) -> int:
    """Run every selected participant/session; returns the exit code (0, 1, 65 or 66)."""
    from bids_mdpp import __version__
    from bids_mdpp.bids import describe_session, discover
    from bids_mdpp.logs import setup_logging

    prepare_output_dir(config.output_dir)
    log_dir = config.output_dir / "logs"
    log_file = setup_logging(log_dir, config.verbose, tag="participant")
    LOGGER.info("bids_mdpp %s: %s", __version__, config.command_line)
    check_bids_dir(config.bids_dir, config.skip_validation)
    sessions = discover(
        config.bids_dir, participant_labels=config.participant_labels,
        session_labels=config.session_labels, bids_filters=config.bids_filters,
    )
    for inputs in sessions:
        LOGGER.info("Found %s", describe_session(inputs))
    from bids_mdpp.imageio import remove_stale_temporaries
    from bids_mdpp.inference import Predictor
    from bids_mdpp.logs import write_crash_file
    from bids_mdpp.model import default_model_dir, load_model
    from bids_mdpp.outputs import session_is_done, write_dataset_description
    from bids_mdpp.reports.boilerplate import write_citation
    from bids_mdpp.reports.participant import SessionReport, write_participant_report

    loaded = load_model(config.model_dir or default_model_dir(), device="cpu")
    LOGGER.info("Model %s %s (%s; contrasts %s)", loaded.card.name, loaded.card.version,
                loaded.card.mode, ", ".join(loaded.card.contrasts))
    adaptation = loaded.card.training.get("adaptation")
    if isinstance(adaptation, dict):
        LOGGER.info("The model was adapted with bids_mdpp adapt from %s on %d unlabelled "
                    "session(s) of %s", (adaptation.get("base_model") or {}).get("name"),
                    len(adaptation.get("sessions") or []), adaptation.get("dataset"))
    write_dataset_description(config.output_dir, bids_dir=config.bids_dir)
    _threads(config.omp_nthreads)
    predictor = Predictor(loaded, device=config.device, precision=config.precision,
                          num_threads=config.inference_nthreads, flip_tta=config.flip_tta)

    reports: dict[str, list] = defaultdict(list)
    failures: list[BidsMdppError | Exception] = []
    skipped = 0
    for inputs in sessions:
        subject_dir = config.output_dir / f"sub-{inputs.subject}"
        if subject_dir.exists():
            remove_stale_temporaries(subject_dir)
        if not config.overwrite and _done(config, inputs, loaded.card.contrasts, session_is_done):
            LOGGER.info("%s: outputs exist; skipping (use --overwrite to redo)", inputs.key)
            skipped += 1
            continue
        try:
            reports[inputs.subject].append(process_session(inputs, config, loaded, predictor))
        except Exception as exc:  # one session's failure never stops the others
            crash = write_crash_file(log_dir, inputs.key, exc)
            LOGGER.error("%s failed: %s (details: %s)", inputs.key, exc, crash)
            failures.append(exc)
            reports[inputs.subject].append(SessionReport(inputs=inputs, error=str(exc)))
    for subject, subject_reports in reports.items():
        try:
            path = write_participant_report(config.output_dir, subject, subject_reports,
                                            command_line=config.command_line)
            LOGGER.info("Report: %s", path)
        except Exception as exc:
            crash = write_crash_file(log_dir, f"sub-{subject}-report", exc)
            LOGGER.error("sub-%s: the report failed: %s (details: %s)", subject, exc, crash)
            failures.append(exc)
    finished = [r for rs in reports.values() for r in rs if r.error is None]
    if finished:
        write_citation(config.output_dir, finished[0].methods)
    LOGGER.info("Finished: %d session(s) done, %d skipped, %d failed; log: %s",
                len(finished), skipped, len(failures), log_file)
    return exit_code(failures, len(sessions) - skipped)


def _done(config: RunConfig, inputs: SessionInputs, model_contrasts, session_is_done) -> bool:
    from bids_mdpp.contrasts import choose_reference

    known = [c for c in inputs.contrasts if c in model_contrasts]
    if not known:
        return False
    return session_is_done(config.output_dir, inputs, choose_reference(known),
                           config.output_spaces)


def exit_code(failures: list[Exception], attempted: int) -> int:
    """0 when nothing failed; when every attempted session failed for the same kind of input
    problem, that problem's code (65 bad data, 66 no input); otherwise 1."""
    if not failures:
        return EXIT_OK
    codes = {getattr(f, "exit_code", EXIT_PARTICIPANT_FAILED) for f in failures}
    if len(failures) >= attempted and len(codes) == 1:
        return codes.pop()
    return EXIT_PARTICIPANT_FAILED


def run_group_level(config: RunConfig) -> int:
    """Gather all participants' results into cohort tables and a report."""
    from bids_mdpp import __version__
    from bids_mdpp.group import run_group
    from bids_mdpp.logs import setup_logging

    if not config.output_dir.is_dir():
        raise NoInputError(f"{config.output_dir}: no such folder; run the participant level first")
    setup_logging(config.output_dir / "logs", config.verbose, tag="group")
    LOGGER.info("bids_mdpp %s: %s", __version__, config.command_line)
    run_group(
        config.output_dir, bids_dir=config.bids_dir, labels_dir=config.labels_dir,
        participant_labels=[p.removeprefix("sub-") for p in config.participant_labels] or None,
    )
    return EXIT_OK
