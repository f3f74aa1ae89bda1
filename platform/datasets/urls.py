from django.urls import path

from . import views

app_name = "datasets"
urlpatterns = [
    path("studies/", views.studies, name="studies"),
    path("studies/<slug:slug>/download/", views.download_page, name="download"),
    path("studies/<slug:slug>/freeze/", views.freeze_view, name="freeze"),
    path("datasets/", views.index, name="index"),
    path("datasets/<slug:name>/", views.snapshot_page, name="snapshot"),
    path("datasets/<slug:name>/files.json", views.files_json, name="files-json"),
    path("datasets/<slug:name>/archive.tar", views.archive, name="archive"),
    path("datasets/<slug:name>/files/<path:path>", views.single_file, name="file"),
]
