"""Codes already printed by another programme, brought into a campaign (contract v1.1, "Switching").

Each code keeps its spelling and is matched like a generated one (without case, separators ignored); codes are
unique across all campaigns, so one that exists in another campaign is rejected, one that exists in this
campaign is a duplicate (a file sent twice changes nothing). `redeemed` uses count toward the code's limit and
the campaign's total; a `customer_id` puts the code in that customer's wallet. Redemptions, rollbacks and the
guessing throttle then treat imported codes as they treat generated ones.
"""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from coupon import repository as repo
from coupon.codes import normalize
from coupon.schemas import ImportedCodeLine
from coupon.service import CouponRuntime
from kit.errors import FieldError, NotFound
from kit.imports import ImportReport, ParsedLines, RejectedLine

log = structlog.get_logger("coupon.imports")


async def import_codes(
    session: AsyncSession, runtime: CouponRuntime, campaign_id: uuid.UUID, lines: ParsedLines[ImportedCodeLine]
) -> ImportReport:
    campaign = await repo.lock_campaign(session, campaign_id)
    if campaign is None:
        raise NotFound("No such campaign.", code="campaign_not_found")
    refused: list[RejectedLine] = []
    duplicates = 0
    wanted: dict[str, tuple[int, ImportedCodeLine]] = {}
    for number, line in lines.valid:
        code = normalize(line.code)
        if code in wanted:
            duplicates += 1  # the same code twice in one file
        elif line.redeemed > campaign.per_code_limit:
            message = f"More uses than the campaign allows per code ({campaign.per_code_limit})."
            refused.append(RejectedLine(line=number, errors=[FieldError("redeemed", message)]))
        else:
            wanted[code] = (number, line)
    owners = await repo.code_owners(session, list(wanted))
    fresh: list[repo.ImportedCode] = []
    for code, (number, line) in wanted.items():
        owner = owners.get(code)
        if owner == campaign_id:
            duplicates += 1
        elif owner is not None:
            refused.append(
                RejectedLine(line=number, errors=[FieldError("code", "This code exists in another campaign.")])
            )
        else:
            spelling = line.code if line.code != code else None
            fresh.append(repo.ImportedCode(code, spelling, line.customer_id, line.redeemed))
    stored = await repo.insert_imported_codes(session, campaign, fresh) if fresh else set()
    for imported in fresh:
        if imported.code not in stored:  # another import took it between our look and our write
            number = wanted[imported.code][0]
            refused.append(RejectedLine(line=number, errors=[FieldError("code", "This code exists already.")]))
    if stored:
        runtime.formats.note_imported()
    log.info("coupon.codes.imported", campaign_id=str(campaign_id), accepted=len(stored), duplicates=duplicates)
    return lines.report(len(stored), duplicates, refused)
