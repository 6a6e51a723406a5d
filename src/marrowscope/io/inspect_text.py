"""The text ``marrowscope info`` prints for a summary of :mod:`marrowscope.io.inspect`."""

from __future__ import annotations

from marrowscope.io.inspect import AnnotationSummary, CohortSummary, SlideSummary, Summary


def _mpp(v: float | None) -> str:
    return "unknown" if v is None else f"{v:.4g} µm/px"


def _counts(counts: dict[str, int] | object, indent: str = "    ") -> list[str]:
    assert isinstance(counts, dict)
    if not counts:
        return [f"{indent}(none)"]
    width = max(len(k) for k in counts)
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [f"{indent}{k:<{width}}  {v:>7}" for k, v in ordered]


def format_summary(s: Summary) -> str:
    """Human-readable text of a summary."""
    lines: list[str] = []
    if isinstance(s, SlideSummary):
        lines.append(f"slide {s.slide_id}  ({s.format}, {s.n_files} file(s))  {s.path}")
        lines.append(f"  size {s.width} x {s.height} px, mpp {_mpp(s.mpp)}")
        lines.append(f"  {len(s.levels)} level(s):")
        for lv in s.levels:
            size = f"{lv.width:>8} x {lv.height:<8}"
            lines.append(f"    [{lv.index}] {size} downsample {lv.downsample:g}  mpp {_mpp(lv.mpp)}")
        for k, v in s.ids.items():
            lines.append(f"  {k}: {v}")
    elif isinstance(s, AnnotationSummary):
        what = s.series_kind or "annotations"
        if s.series_kind == "session" and s.session is not None:
            what = f"session {s.session}"
        lines.append(f"{s.format} ({what})  {s.path}")
        if s.series_description:
            lines.append(f"  series: {s.series_description}  [{s.series_uid}]")
        if s.referenced_series_uid:
            lines.append(f"  references slide series {s.referenced_series_uid}")
        if s.container_id or s.patient_id:
            lines.append(f"  slide {s.container_id or '?'}  patient {s.patient_id or '?'}")
        if s.slide_ids and s.format != "dicom-ann":
            shown = ", ".join(s.slide_ids[:5]) + (" ..." if len(s.slide_ids) > 5 else "")
            lines.append(f"  {len(s.slide_ids)} slide(s): {shown}")
        lines.append(f"  {s.n_cells} cell box(es), {s.n_regions} region(s)")
        if s.groups:
            lines.append(f"  {len(s.groups)} annotation group(s):")
            for g in s.groups:
                lines.append(f"    {g.label:<32} {g.count:>7}  {g.graphic_type} {g.generation_type}")
        lines.append("  per label:")
        lines.extend(_counts(dict(s.label_counts)))
    elif isinstance(s, CohortSummary):
        lines.append(f"cohort {s.path}")
        lines.append(
            f"  {s.n_patients} patient(s), {s.n_slides} slide(s), {s.n_ann_series} annotation series"
        )
        if s.diagnoses:
            lines.append("  diagnoses: " + ", ".join(f"{k} {v}" for k, v in s.diagnoses.items()))
        lines.append("  annotation series by kind:")
        lines.extend(_counts(dict(s.ann_series_by_kind)))
        lines.append(f"  ROIs {s.n_rois}, unlabeled boxes {s.n_unlabeled_boxes}")
        lines.append(f"  consensus labels (DICOM ANN), {sum(s.label_counts.values())} cells:")
        lines.extend(_counts(dict(s.label_counts)))
        if s.csv_label_counts is not None:
            same = dict(s.csv_label_counts) == dict(s.label_counts)
            lines.append(
                f"  csv/cells_labelled.csv: {sum(s.csv_label_counts.values())} cells, per-label counts "
                + ("agree with the DICOM ANN" if same else "DIFFER from the DICOM ANN")
            )
            if not same:
                lines.extend(_counts(dict(s.csv_label_counts)))
        if s.n_orphan_series:
            lines.append(f"  {s.n_orphan_series} annotation series reference a slide not in this folder")
        for problem in s.problems:
            lines.append(f"  problem: {problem}")
        lines.append("  patients:")
        for p in s.patients:
            kinds = ", ".join(f"{k} {v}" for k, v in p.ann_series.items()) or "no annotations"
            dx = f" [{p.diagnosis}]" if p.diagnosis else ""
            slide = f"slide {p.slide_id or '-'} ({p.n_slide_files} file(s))"
            lines.append(f"    {p.patient_id}{dx}  {slide}; {kinds}")
    return "\n".join(lines)
