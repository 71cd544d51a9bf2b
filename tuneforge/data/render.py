"""Rich renderings of the data stage's results for the terminal (the CLI's `--json` skips these)."""

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text as RichText

from tuneforge.data.checks import CheckReport
from tuneforge.data.findings import CATALOG, SEVERITY_ORDER
from tuneforge.data.prepare import PrepareResult

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def findings_lines(report: CheckReport, per_code: int = 5) -> list[RichText]:
    """One block per code: severity, code, count and meaning; then where (line, field) and the fix.
    Blocks rather than a wide table, so that findings stay readable in an 80-column terminal."""
    lines = []
    codes = sorted(report.findings.kept, key=lambda c: (SEVERITY_ORDER[report.findings.kept[c][0].severity], c))
    for code in codes:
        kept = report.findings.kept[code]
        total = report.findings.counts[code]
        severity = kept[0].severity
        lines.append(
            RichText.assemble(
                (f"{severity:<8}", SEVERITY_STYLE[severity]),
                (code, "bold"),
                f"  x{total:,}  ",
                (CATALOG[code].title, "dim"),
            )
        )
        for finding in kept[:per_code]:
            where = ", ".join(
                part for part in (f"line {finding.line}" if finding.line else "", finding.field or "") if part
            )
            lines.append(RichText(f"    {where + ': ' if where else ''}{finding.message}"))
        if total > per_code:
            lines.append(RichText(f"    ... and {total - per_code:,} more", style="dim"))
        fixes = {f.fix for f in kept[:per_code]}
        for fix in sorted(fixes):
            lines.append(RichText(f"    fix: {fix}", style="green"))
    return lines


def stats_table(report: CheckReport) -> Table:
    stats = report.stats
    table = Table(title="Statistics", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("examples", f"{stats['examples']:,} of {stats['records']:,} records")

    def spread(summary):
        return "-" if not summary else f"{summary['min']} / {summary['mean']} / {summary['p95']} / {summary['max']}"

    table.add_row("messages per example (min / mean / p95 / max)", spread(stats.get("messages_per_example")))
    if "tokens_per_example" in stats:
        table.add_row("tokens per example (min / mean / p95 / max)", spread(stats["tokens_per_example"]))
        table.add_row("tokens in total", f"{stats['total_tokens']:,}")
        table.add_row("trainable tokens (assistant replies)", f"{stats['trainable_tokens']:,}")
        table.add_row(f"truncated at context {stats['context_length']}", f"{stats['truncated_examples']:,}")
        table.add_row(f"tokens x {stats['default_epochs']} epochs (auto)", f"{stats['tokens_x_epochs']:,}")
        if "estimated_training_seconds" in stats:
            table.add_row(
                f"estimated LoRA training time here ({stats.get('estimated_on_device', 'cpu')})",
                f"~{_duration(stats['estimated_training_seconds'])} "
                f"(~{stats['estimated_lora_tokens_per_second']:.0f} tok/s)",
            )
    if stats.get("personal_data"):
        table.add_row("personal data found", ", ".join(f"{k}: {v}" for k, v in stats["personal_data"].items()))
    if report.labels:
        table.add_row("labels", ", ".join(f"{label}: {n}" for label, n in report.labels.items()))
    return table


def render_check(report: CheckReport, console: Console) -> None:
    verdict = (
        RichText("OK: no errors", style="bold green")
        if report.ok
        else RichText(f"{report.findings.errors:,} error(s)", style="bold red")
    )
    header = RichText.assemble(
        (report.path, "bold"),
        f"  format: {report.format or 'unknown'}  ",
        f"({report.kind or '-'})  ",
        verdict,
        f"  {report.findings.warnings:,} warning(s)",
    )
    parts = [header]
    if report.findings.kept:
        parts.append(RichText(""))
        parts.extend(findings_lines(report))
        parts.append(RichText(""))
    parts.append(stats_table(report))
    console.print(Panel(Group(*parts), title="tuneforge data check", border_style="green" if report.ok else "red"))


def render_prepare(result: PrepareResult, console: Console) -> None:
    manifest = result.manifest
    table = Table(title=f"Prepared dataset in {result.out_dir}")
    table.add_column("file")
    table.add_column("examples", justify="right")
    table.add_column("sha256")
    for entry in manifest["outputs"].values():
        table.add_row(entry["file"], f"{entry['examples']:,}", entry["sha256"][:16] + "...")
    counts = manifest["counts"]
    notes = [
        f"{counts['examples_out']:,} examples written from {counts['examples_in']:,}",
        f"{counts['duplicates_removed']:,} duplicates removed",
        f"{counts['texts_normalised']:,} texts normalised",
    ]
    if counts["invalid_set_aside"]:
        notes.append(f"{counts['invalid_set_aside']:,} invalid records set aside in rejected.jsonl")
    if counts["redactions"]:
        notes.append("redacted: " + ", ".join(f"{k} {v}" for k, v in counts["redactions"].items()))
    console.print(table)
    console.print("  " + "; ".join(notes))
    if manifest.get("labels"):
        for split, labels in manifest["labels"].items():
            console.print(f"  {split:<10} labels: " + ", ".join(f"{k} {v}" for k, v in labels.items()))
    console.print(f"  manifest: {result.out_dir / 'manifest.json'}")


def render_codes(console: Console) -> None:
    table = Table(title="Finding codes")
    table.add_column("code")
    table.add_column("severity")
    table.add_column("meaning")
    table.add_column("fix")
    for code, entry in sorted(CATALOG.items(), key=lambda kv: (SEVERITY_ORDER[kv[1].severity], kv[0])):
        table.add_row(code, RichText(entry.severity, style=SEVERITY_STYLE[entry.severity]), entry.title, entry.fix)
    console.print(table)
