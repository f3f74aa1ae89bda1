def test_ready_study_has_triplets(ready_study):
    assert ready_study.triplets.count() == 18
