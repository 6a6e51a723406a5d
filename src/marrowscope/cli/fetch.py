"""CLI: ``marrowscope fetch``: list (offline) and download the IDC BoneMarrowWSI collection."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from marrowscope.cli import params
from marrowscope.cli.app import app
from marrowscope.errors import MarrowscopeError


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


@app.command("fetch")
def fetch(
    out: Path = typer.Option(Path("bmdeep"), "--out", "-o",
                             help="Download folder (IDC-like layout under OUT/dicom)."),
    list_only: bool = typer.Option(False, "--list",
                                   help="List the collection (offline, from the bundled index)."),
    patient: list[str] = typer.Option(None, "--patient", "-p",
                                      help="PatientID(s); repeat or comma-separate."),
    kind: str = typer.Option(None, "--kind",
                             help="Series kinds: roi,session,session0..5,consensus,unlabeled,slide."),
    labelled_only: bool = typer.Option(False, "--labelled-only",
                                       help="Only patients with a consensus series."),
    slides: bool = typer.Option(False, "--slides",
                                help="Also download the slide (SM) series: 2.5-14 GB each."),
    annotations_only: bool = typer.Option(True, "--annotations-only/--no-annotations",
                                          help="Annotation series (default, 17 MB in all); "
                                               "--no-annotations with --slides fetches slides only."),
    limit: int = typer.Option(None, "--limit", callback=params.POSITIVE,
                              help="Only the first N selected patients (sorted by PatientID)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be fetched, fetch nothing."),
    source: str = typer.Option("aws", "--source", callback=params.one_of("aws", "gcs"),
                               help="Bucket: aws (default) or gcs."),
    timeout: float = typer.Option(900.0, "--timeout", callback=params.NON_NEGATIVE_FLOAT,
                                 help="Give up after this many seconds (0 = no limit)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    series: bool = typer.Option(False, "--series", help="With --list --json: include every series."),
    rois_only: bool = typer.Option(False, "--rois-only",
                                   help="Annotation series and only the ROI regions of the slides, over "
                                        "DICOMweb (--dicomweb URL): a few MB per slide instead of GBs."),
    dicomweb: str = typer.Option(None, "--dicomweb", help="DICOMweb root URL for --rois-only "
                                                          "(e.g. http://host:8042/dicom-web)."),
    roi_mpp: list[float] = typer.Option([], "--roi-mpp",
                                        help="With --rois-only: also store each ROI at this µm/px "
                                             "(repeatable; e.g. 0.25 and 0.45)."),
) -> None:
    """List or download the BoneMarrowWSI-PediatricLeukemia collection from NCI IDC (annotations first).

    Downloads resume (complete series are skipped). Offline it stops within seconds with a clear error.
    """
    if rois_only:
        from marrowscope.data.roi_fetch import fetch_rois
        from marrowscope.errors import InputError

        if not dicomweb:
            raise InputError("--rois-only", "give the DICOMweb server with --dicomweb URL")
        res = fetch_rois(dicomweb, out, patients=_split(patient) or None, mpps=roi_mpp,
                         timeout=timeout or 60.0, progress=True)
        for w in res.warnings:
            typer.echo(f"warning: {w}", err=True)
        mb = res.patch_bytes / 1e6
        typer.echo(f"{len(res.patients)} patient(s): {res.annotation_files} annotation file(s) under "
                   f"{out}/dicom, {res.patches} ROI patch(es) ({mb:.1f} MB) under {out}/rois")
        return
    from marrowscope.io import idc

    catalog = idc.load_catalog()
    selection = idc.select_series(
        catalog, patients=_split(patient) or None, kinds=kind, labelled_only=labelled_only,
        slides=slides, annotations=annotations_only, limit_patients=limit,
    )
    if list_only:
        shown = selection if (patient or kind or labelled_only or limit or slides) else catalog
        if not (kind or slides):
            # listing shows slides and annotations of the chosen patients
            shown = idc.select_series(catalog, patients=shown.patients, slides=True, annotations=True)
        _print_listing(shown, as_json, series)
        return
    if not selection.series:
        raise MarrowscopeError("nothing selected: check --patient/--kind/--labelled-only (see --list)")
    plan = idc.plan_download(selection, out)
    if dry_run:
        if as_json:
            typer.echo(json.dumps({"root": str(out), "todo": [s.series_uid for s in plan.todo],
                                   "done": [s.series_uid for s in plan.done], "todo_mb": plan.todo_mb},
                                  indent=1))
        else:
            typer.echo(plan.describe())
        return
    report = idc.download(plan, source=source, timeout_s=timeout or None)
    if as_json:
        typer.echo(json.dumps({"root": str(report.root), "requested": report.requested,
                               "already_complete": report.already_complete, "fetched": len(report.fetched),
                               "missing": list(report.missing), "seconds": round(report.seconds, 1),
                               "timed_out": report.timed_out}, indent=1))
    else:
        typer.echo(f"{len(report.fetched)} series fetched, {report.already_complete} already complete, "
                   f"{len(report.missing)} missing, in {report.seconds:.0f} s -> {report.root}")
    if report.missing:
        why = f"the time limit of {timeout:g} s ran out" if report.timed_out else "the download failed"
        raise idc.IncompleteDownloadError(
            f"{len(report.missing)} series did not arrive completely ({why}); "
            "rerun the same command to resume"
        )


def _print_listing(cat: object, as_json: bool, with_series: bool) -> None:
    from marrowscope.io.idc import IdcCatalog

    assert isinstance(cat, IdcCatalog)
    if as_json:
        typer.echo(json.dumps(cat.to_dict(with_series=with_series), indent=1))
        return
    s = cat.summary()
    kinds = s["annotation_kinds"]
    sessions = ", ".join(f"S{k} {v}" for k, v in s["sessions"].items())
    typer.echo(f"collection {s['collection_id']} (idc-index-data {s['index_version']}, offline index)")
    typer.echo(f"patients {s['n_patients']}, labelled (consensus) {s['n_labelled_patients']}")
    typer.echo(f"slides (SM) {s['n_slides']}: {s['slides_instances']} instances, "
               f"{s['slides_size_mb'] / 1e3:,.1f} GB")
    typer.echo(f"annotation series (ANN) {s['n_annotation_series']}: {s['annotations_size_mb']:.1f} MB; "
               + ", ".join(f"{k} {v}" for k, v in kinds.items()) + (f" ({sessions})" if sessions else ""))
    typer.echo("")
    typer.echo(f"{'patient':32}  {'age':4} {'sex':3} {'slide GB':>8} {'ANN':>3} {'ANN MB':>7}  "
               "labelled  kinds")
    for p in cat.patient_summaries():
        kinds_text = " ".join(f"{k}:{v}" for k, v in p.kinds.items())
        typer.echo(f"{p.patient_id:32}  {p.age:4} {p.sex:3} {p.slide_size_mb / 1e3:8.2f} "
                   f"{p.annotation_series:3d} {p.annotations_size_mb:7.3f}  "
                   f"{'yes' if p.labelled else 'no':8}  {kinds_text}")
