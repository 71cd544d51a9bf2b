"""The dashboard's playground: one prompt to two models side by side (a base and a tuned model, or two
checkpoints), streamed from the API's own /v1/chat/completions; thumbs and corrections go to the
API's feedback store, and the project's feedback is listed here and exported as training data
(serve/retrain.py's SFT or DPO JSONL), for download or as a new file on the Data page."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from tuneforge.registry import access, store
from tuneforge.serve.deps import project
from tuneforge.serve.model_access import model_choices
from tuneforge.serve.protocol import not_found
from tuneforge.serve.retrain import feedback_records
from tuneforge.web.links import link_project, signed
from tuneforge.web.render import fragment, page
from tuneforge.web.views import when

router = APIRouter(include_in_schema=False)
FEEDBACK_SHOWN = 100  # the newest; the export holds them all


@router.get("/ui/playground")
def playground_page(request: Request, model: str = "") -> HTMLResponse:
    from urllib.parse import urlencode

    query = "?" + urlencode({"model": model}) if model else ""
    return page(request, "playground", f"/ui/fragments/playground{query}", "Playground")


@router.get("/ui/fragments/playground")
def playground_fragment(request: Request, model: str = "", owner: str = Depends(project)) -> HTMLResponse:
    """The two sides' choices: `model` (or the newest tuned model) on the right, its base on the left."""
    choices = model_choices(owner, request.app.state.allowed_model_dirs)
    names = [name for name, _ in choices]
    tuned = [name for name, source in choices if source == "tuned"]
    right = model if model in names else (tuned[0] if tuned else (names[0] if names else ""))
    found = store.find_model(right) if right in tuned else None
    left = found.base_model if found is not None and found.base_model in names else (names[0] if names else "")
    return fragment(request, "playground.html", choices=choices, left=left, right=right)


@router.get("/ui/fragments/feedback")
def feedback_fragment(request: Request, owner: str = Depends(project)) -> HTMLResponse:
    rows = access.feedback_with_completions(owner)[-FEEDBACK_SHOWN:][::-1]
    shown = [
        {
            "id": feedback.id,
            "when": when(feedback.created_at),
            "model": completion.model,
            "prompt": _last_user_message(completion),
            "answer": completion.answer,
            "rating": feedback.rating,
            "correction": feedback.correction or "",
        }
        for feedback, completion in rows
    ]
    exports = {style: signed(request, f"/ui/files/feedback-{style}.jsonl") for style in ("sft", "dpo")}
    return fragment(request, "feedback.html", feedback=shown, exports=exports)


def _last_user_message(completion: access.Completion) -> str:
    if completion.messages is None:
        return completion.prompt or ""
    users = [m.get("content") or "" for m in completion.messages if m.get("role") == "user"]
    return users[-1] if users else ""


@router.get("/ui/files/feedback-{style}.jsonl")
def feedback_export(style: str, owner: str = Depends(link_project)) -> Response:
    """The project's feedback as training data: `tuneforge feedback export`'s JSONL, SFT or DPO."""
    import json

    if style not in ("sft", "dpo"):
        raise not_found("export", style)
    records = feedback_records(style, owner)
    body = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return Response(
        body,
        media_type="application/jsonl",
        headers={"Content-Disposition": f'attachment; filename="feedback-{style}.jsonl"'},
    )
