"""Codes already printed by another programme, brought into a campaign (contract v1.1, "Switching").

Each code keeps its spelling and is matched like a generated one (without case, separators ignored); codes are
unique across all campaigns, so one that exists in another campaign is rejected, one that exists in this
campaign is a duplicate (a file sent twice changes nothing). `redeemed` uses count toward the code's limit, the
campaign's total and, for a code with a `customer_id` (which also puts it in that customer's wallet), that
customer's limit in the campaign, as the same uses made here would. Redemptions, rollbacks and the
guessing throttle then treat imported codes as they treat generated ones.
"""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from coupon.campaigns import campaign_row
from coupon.code_format import normalize
from coupon.repositories import codes as code_rows
from coupon.repositories.codes import ImportedCode
from coupon.runtime import CouponRuntime
from coupon.schemas import ImportedCodeLine
from kit.errors import FieldError
from kit.imports import ImportReport, ParsedLines, RejectedLine

log = structlog.get_logger("coupon.imports")


async def import_codes(
    session: AsyncSession, runtime: CouponRuntime, campaign_id: uuid.UUID, lines: ParsedLines[ImportedCodeLine]
) -> ImportReport:
    campaign = await campaign_row(session, campaign_id, lock=True)
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
    fresh = [
        ImportedCode(code, line.code if line.code != code else None, line.customer_id, line.redeemed)
        for code, (_, line) in wanted.items()
    ]
    numbers = [number for number, _ in wanted.values()]
    kept_out = await code_rows.insert_imported(session, campaign_id, campaign.reserved, fresh) if fresh else {}
    for index, where in kept_out.items():
        if where == "here":
            duplicates += 1
        else:
            message = "This code exists in another campaign." if where is not None else "This code exists already."
            refused.append(RejectedLine(line=numbers[index], errors=[FieldError("code", message)]))
    stored = len(fresh) - len(kept_out)
    if stored:
        runtime.formats.note_imported()
    log.info("coupon.codes.imported", campaign_id=str(campaign_id), accepted=stored, duplicates=duplicates)
    return lines.report(stored, duplicates, refused)
