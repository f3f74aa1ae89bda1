"""Staff download page: the BAPPS export of a study as a zip, streamed from disk."""

import shutil
import tempfile
from pathlib import Path

from django.contrib.admin.views.decorators import staff_member_required
from django.http import FileResponse
from django.shortcuts import get_object_or_404, render

from rating.selectors import voted_triplets
from studies.models import Study

from .services import export_bapps


@staff_member_required
def download_page(request, slug: str):
    study = get_object_or_404(Study, slug=slug)
    return render(
        request,
        "datasets/download.html",
        {"study": study, "voted_triplets": voted_triplets(study).count()},
    )


@staff_member_required
def download_zip(request, slug: str):
    study = get_object_or_404(Study, slug=slug)
    workdir = Path(tempfile.mkdtemp(prefix="twoafc-download-"))
    try:
        export_bapps(study, workdir / study.slug)
        archive = shutil.make_archive(str(workdir / study.slug), "zip", workdir, study.slug)
        # The open handle keeps the file readable after the folder is removed (POSIX).
        handle = open(archive, "rb")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return FileResponse(handle, as_attachment=True, filename=f"{study.slug}-bapps.zip")
