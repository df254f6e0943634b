"""What the demo's apps say: made-up HR documents and questions for the RAG chat, the support
agent's tools and their results, the Anthropic chat's system prompt, and the models each uses.
"""

from __future__ import annotations

RAG_MODEL = "gpt-4o-mini"
AGENT_MODEL = "gpt-4o"
CLAUDE_MODEL = "claude-sonnet-4-5"
FAILING_MODEL = "gpt-4.5-preview"  # the simulator answers 429 (quota) for it
REPLAY_CHANGES = {"model": "gpt-4.1-mini", "temperature": 0.2}

PTO = ("pto-policy-2026.docx", "1/5/2026, 4:03:09 PM")
REMOTE = ("remote-work-guidelines.pdf", "3/2/2026, 9:12:44 AM")
EXPENSES = ("expense-policy.md", "2/17/2026, 11:40:21 AM")
CHUNKS = {
    "pto": (
        PTO,
        "Full-time employees accrue paid time off from their first day. In the first year you earn 20 vacation "
        "days, prorated by start month. From the third year on the allowance rises to 25 days.",
    ),
    "pto-2": (  # the same document after it was edited and re-ingested
        ("pto-policy-2026.docx", "8/14/2026, 10:27:53 AM"),
        "Full-time employees accrue paid time off from their first day. As of September 2026 the first year "
        "brings 25 vacation days, prorated by start month. From the third year on the allowance rises to 28 days.",
    ),
    "carryover": (
        PTO,
        "Unused vacation days can be carried over into the next year, up to a maximum of 5 days. Carried-over "
        "days expire on March 31. Days above the limit are forfeited unless your manager approved an exception.",
    ),
    "requests": (
        PTO,
        "Vacation requests go through the HR portal at least two weeks in advance. Requests longer than ten "
        "working days need approval from your manager and from People Ops.",
    ),
    "benefits": (
        ("benefits-overview-2026.pdf", "1/5/2026, 4:05:30 PM"),
        "Health, dental and vision coverage start on the first day of employment. Parental leave is 16 weeks at "
        "full pay. Public holidays follow the local office calendar and do not count against vacation days.",
    ),
    "onboarding": (
        ("onboarding-checklist.md", "12/1/2025, 2:18:07 PM"),
        "In your first week, set up the HR portal, book the security training and meet your onboarding buddy. "
        "Your vacation balance appears in the HR portal after your first payroll run.",
    ),
    "abroad": (
        REMOTE,
        "You may work remotely from another country for up to 30 days per calendar year. Longer stays create "
        "tax and payroll obligations and are not allowed.",
    ),
    "abroad-approval": (
        REMOTE,
        "Working abroad needs written approval from your manager and a check by People Ops at least three weeks "
        "before you travel. Use the Work From Abroad form in the HR portal.",
    ),
    "core-hours": (
        REMOTE,
        "While working remotely you must be reachable during core hours, 10:00 to 15:00 in your home office's "
        "time zone, and use the company VPN on every network.",
    ),
    "coworking": (
        EXPENSES,
        "Coworking spaces are reimbursable only when no Acme office is within 50 km. Day passes up to 35 EUR can "
        "be claimed without pre-approval; monthly memberships need your manager's approval first.",
    ),
    "receipts": (
        EXPENSES,
        "Submit expenses in the finance tool within 30 days with an itemized receipt. Costs incurred while "
        "working abroad are reimbursed in EUR at the exchange rate of the receipt date.",
    ),
}
# (question, new search hits); AnythingLLM back-fills up to TOP_N from the previous turn's sources.
RAG_TURNS = [
    ("How many vacation days do I get in my first year?", ["pto", "onboarding", "benefits", "requests"]),
    ("Can I carry unused days over into next year?", ["carryover"]),
    ("What about working remotely from another country for a few weeks?", ["abroad", "core-hours"]),
    ("Whose approval do I need for that, and how far in advance?", ["abroad-approval", "requests"]),
    ("Can I expense a coworking space while I'm working abroad?", ["coworking", "receipts"]),
]
RERUN_HITS = ["pto-2", "onboarding", "benefits", "requests"]

AGENT_SYSTEM = (
    "You are Acme's customer support agent. Look orders and shipments up with the tools before answering; "
    "never guess a delivery date. Be brief and friendly."
)
AGENT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {p: {"type": "string"} for p in params},
                "required": params,
                "additionalProperties": False,
            },
        },
    }
    for name, description, params in (
        ("lookup_order", "Find an order by its number, e.g. A-10423.", ["order_id"]),
        ("track_shipment", "Current status of a parcel from the carrier.", ["tracking_number"]),
        ("create_return", "Open a return for an order.", ["order_id", "reason"]),
    )
]
TOOL_RESULTS = {
    "lookup_order": {
        "order_id": "A-10423",
        "status": "shipped",
        "carrier": "UPS",
        "tracking_number": "1Z999AA10123456784",
    },
    "track_shipment": {"status": "in transit", "last_scan": "Louisville, KY", "estimated_delivery": "Thursday"},
}
CLAUDE_SYSTEM = "You are a concise technical writing assistant."
