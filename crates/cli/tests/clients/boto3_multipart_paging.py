"""ListMultipartUploads paging with boto3's paginator against a DataMesh node.

Run by crates/cli/tests/s3.rs with DM_S3, DM_KEY, DM_SECRET in the
environment. Seven uploads (three of one key) are listed two at a time: every
upload must come exactly once, in S3's order (key, then initiation), with
IsTruncated and the Next*Marker fields on every page but the last.
"""

import os

from dm_s3 import check, client

EP, KEY, SECRET = (os.environ[k] for k in ("DM_S3", "DM_KEY", "DM_SECRET"))
s3 = client(EP, KEY, SECRET)


s3.create_bucket(Bucket="paging")
made = []
for key in ["a", "b", "b", "b", "c/1", "c/2", "d"]:
    made.append((key, s3.create_multipart_upload(Bucket="paging", Key=key)["UploadId"]))

pages = list(s3.get_paginator("list_multipart_uploads").paginate(Bucket="paging", PaginationConfig={"PageSize": 2}))
check(len(pages) == 4, f"7 uploads in pages of 2 make 4 pages, got {len(pages)}")
for p in pages[:-1]:
    check(p["IsTruncated"] is True, f"a page before the last is truncated: {p}")
    check(p.get("NextKeyMarker") and p.get("NextUploadIdMarker"), f"a truncated page names where to resume: {p}")
    check(p["MaxUploads"] == 2, "MaxUploads echoes the page size")
check(pages[-1]["IsTruncated"] is False, "the last page is not truncated")
listed = [(u["Key"], u["UploadId"]) for p in pages for u in p.get("Uploads", [])]
check(len(listed) == len(set(listed)) == 7, f"each upload exactly once: {listed}")
check(set(listed) == set(made), "the listed uploads are the ones made")
check([k for k, _ in listed] == sorted(k for k, _ in listed), f"key order: {listed}")
# Uploads of one key keep their initiation order across a page break.
check([u for k, u in listed if k == "b"] == [u for k, u in made if k == "b"], "one key's uploads in initiation order")

# A prefix narrows the listing; the markers page within it.
sub = list(s3.get_paginator("list_multipart_uploads").paginate(Bucket="paging", Prefix="c/", PaginationConfig={"PageSize": 1}))
check([u["Key"] for p in sub for u in p.get("Uploads", [])] == ["c/1", "c/2"], f"prefix c/: {sub}")

one = s3.list_multipart_uploads(Bucket="paging", MaxUploads=3)
check(one["IsTruncated"] and len(one["Uploads"]) == 3, "MaxUploads=3 gives 3 and says more follow")
rest = s3.list_multipart_uploads(
    Bucket="paging", MaxUploads=100, KeyMarker=one["NextKeyMarker"], UploadIdMarker=one["NextUploadIdMarker"]
)
check(len(rest["Uploads"]) == 4 and not rest["IsTruncated"], "the rest after the markers")
for key, up in made:
    s3.abort_multipart_upload(Bucket="paging", Key=key, UploadId=up)
check(not s3.list_multipart_uploads(Bucket="paging").get("Uploads"), "aborted uploads are gone")
print("boto3 multipart paging passed")
