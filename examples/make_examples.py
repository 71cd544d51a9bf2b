"""Generate the Tuneforge example datasets for "Lumen Ledger", a fictional invoicing SaaS.

Outputs (all written next to this script, in examples/):

* support_chat.jsonl        - 320 chat fine-tuning examples (OpenAI chat format) for
                              "Pip", a support assistant with a strict house style.
                              About 15% are multi-turn; their first assistant turn is an
                              older, off-brand reply marked with "weight": 0.
* ticket_classifier.jsonl   - 300 chat examples that map a support ticket to one label:
                              billing, bug, feature_request, account, how_to.
* support_preferences.jsonl - 150 preference pairs (OpenAI DPO format): a house-style
                              answer versus a rambling, off-brand or curt one.
* ledger_handbook.txt       - about 40 paragraphs of an internal product handbook, for
                              continued pre-training.

Run from the repository root with Python 3.11 (standard library only):

    python examples/make_examples.py

Everything is driven by random.Random(20261121), so every run rewrites the files
byte-identically. The script validates its own output (counts, duplicates, house style,
forbidden characters, personal-data-like strings) and fails loudly if a rule is broken.

Pip's house style: the answer starts with "Hi there! ", uses Lumen Ledger jargon, gives
1-4 numbered steps "1) ... 2) ..." for procedures (otherwise 2-3 short sentences), stays
under 90 words and ends with the line "\\n\u2014 Pip, Lumen Ledger Support".

Facts used consistently everywhere (answers, preferences and handbook):
payouts take 2 business days; Autopay retries 3 times over 5 days; reminders go out 3, 7
and 14 days after the due date; refunds reach clients in 5-10 business days; recurring
invoices are sent at 9:00 workspace time; cancelled workspaces stay read-only for 90 days;
Starter has 1 member, Growth up to 5, Scale unlimited; branding needs Growth or Scale.
"""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path

SEED = 20261121
OUT_DIR = Path(__file__).resolve().parent

GREETING = "Hi there! "
SIGNATURE = "\n\u2014 Pip, Lumen Ledger Support"
MAX_ANSWER_WORDS = 90

SUPPORT_SYSTEM = "You are Pip, the support assistant for Lumen Ledger."
CLASSIFIER_SYSTEM = (
    "Classify the support ticket into one of: billing, bug, feature_request, account, "
    "how_to. Answer with the label only."
)

N_CHAT = 320
N_MULTI_TURN = 48  # 15% of N_CHAT
N_PREFERENCES = 150
LABEL_COUNTS = {"billing": 80, "bug": 70, "how_to": 60, "account": 50, "feature_request": 40}

# --------------------------------------------------------------------------------------
# Slot values shared by the support prompts and the tickets. All names are fictional
# businesses; nothing here is personal data.
# --------------------------------------------------------------------------------------

SLOT_VALUES = {
    "client": [
        "Birchwood Bakery",
        "Northpeak Studio",
        "Harbor and Pine",
        "Copperleaf Design",
        "Tidewater Logistics",
        "Maple Row Dental",
        "Bluefin Surf Co",
        "Quarry Lane Coffee",
        "Orbit Print Shop",
        "Fernhill Landscaping",
        "Kestrel Consulting",
        "Lantern Yoga",
        "Saltmarsh Books",
        "Redwood Robotics",
        "Juniper Events",
        "Atlas Moving",
    ],
    "inv": [f"INV-{n}" for n in (1042, 1187, 1530, 2041, 2093, 2218, 2650, 3007, 3114, 3482, 3876, 4120)],
    "currency": ["EUR", "GBP", "CAD", "AUD", "JPY", "CHF", "SEK", "NZD", "MXN", "DKK"],
    "plan": ["Starter", "Growth", "Scale"],
    "upplan": ["Growth", "Scale"],
    "downplan": ["Starter", "Growth"],
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"],
    "month": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    "amount": ["120", "250", "480", "600", "900", "1,200", "1,850", "2,750", "3,400"],
    "country": [
        "Germany",
        "France",
        "the UK",
        "Canada",
        "Australia",
        "Ireland",
        "the Netherlands",
        "Spain",
        "New Zealand",
    ],
    "tax": ["VAT", "GST", "sales tax", "HST"],
    "tool": ["QuickBooks", "Xero", "FreeAgent"],
    "tool2": ["Sage", "Zoho Books", "Wave", "MYOB"],
    "device": ["iPhone", "Android phone", "iPad", "Android tablet"],
    "role": ["Admin", "Accountant", "Viewer"],
    "n": ["2", "3", "4"],
    "browser": ["Chrome", "Firefox", "Safari", "Edge"],
    "freq": ["week", "month", "quarter"],
    "lang": ["Spanish", "German", "French", "Portuguese", "Dutch", "Italian"],
    "paymethod": ["Apple Pay", "Google Pay", "direct debit", "PayPal"],
    "os": ["Windows", "macOS", "Linux"],
}

# When an answer mentions a slot the user never mentioned, this neutral wording is used.
GENERIC = {
    "client": "your client",
    "inv": "the invoice",
    "currency": "the currency you need",
    "upplan": "the new plan",
    "downplan": "the smaller plan",
    "day": "the weekday you prefer",
    "tax": "VAT or GST",
    "tool": "your accounting tool",
    "device": "phone",
    "role": "the new role",
}

# --------------------------------------------------------------------------------------
# Support topics. Each intent has several user phrasings ("asks"), one house-style
# answer body and a plain one-line "gist" used to build the worse preference answers.
# An answer given as a list is (lead sentence, step, step, ...); a string is prose.
# --------------------------------------------------------------------------------------

TOPICS = [
    {
        "title": "sending invoices",
        "intents": [
            {
                "asks": [
                    "How do I send an invoice to {client}?",
                    "first time using lumen ledger, how do i send my first invoice",
                    "Could you walk me through sending a Smart Invoice to a new client?",
                    "send invoice to {client} - where's the button??",
                    "Hi, I need to bill {client} for {amount} {currency} today. What's the quickest way?",
                    "how to email an invoice from the app to {client}",
                ],
                "answer": [
                    "Sending a Smart Invoice only takes a minute:",
                    "Open Smart Invoices and click New.",
                    "Pick the client card for {client}, or create one.",
                    "Add your line items and check the currency.",
                    "Click Send - your client gets an email with a link to the client portal.",
                ],
                "gist": "Create the invoice under Smart Invoices, pick the client card, add line items and click Send.",
            },
            {
                "asks": [
                    "{client} says they never got invoice {inv}. Can I resend it?",
                    "my client didnt receive the invoice email, what now",
                    "Invoice {inv} shows as sent but the client can't find it anywhere. Help?",
                    "how can i resend an invoice?? {client} claims nothing arrived",
                    "Is there a way to just send {client} a link to {inv} instead of another email?",
                ],
                "answer": [
                    "Let's get {inv} in front of them:",
                    "Open {inv} in Smart Invoices.",
                    "Click More and choose Resend, or Copy portal link to share it yourself.",
                    "Ask your client to check spam for a message from Lumen Ledger.",
                ],
                "gist": "Open the invoice, click More and choose Resend, or copy the portal link.",
            },
        ],
    },
    {
        "title": "recurring invoices",
        "intents": [
            {
                "asks": [
                    "How do I set up a recurring invoice for {client}?",
                    "can invoices repeat automatically every month?",
                    "I bill {client} the same {amount} {currency} every month. Is there a way to automate that?",
                    "recuring invoice setup pls",
                    "Is it possible to send {client} an invoice every quarter without recreating it each time?",
                ],
                "answer": [
                    "Recurring Smart Invoices handle this for you:",
                    "Create a new Smart Invoice for {client}.",
                    "Turn on Repeat and choose weekly, monthly, quarterly or yearly.",
                    "Pick the start date and click Schedule.",
                    "Each copy goes out at 9:00 in your workspace time zone.",
                ],
                "gist": "Create a Smart Invoice, turn on Repeat, choose how often and click Schedule.",
            },
            {
                "asks": [
                    "How do I pause the recurring invoice for {client} for a couple of months?",
                    "need to stop a repeating invoice, client ended the contract",
                    "Our recurring invoice to {client} went out again even though the project ended. How do I stop it??",
                    "Can I change the amount on a recurring invoice without starting over?",
                    "where do i edit a recurring schedule for {client}",
                ],
                "answer": [
                    "You can change a recurring series at any time:",
                    "Open Smart Invoices and filter by Recurring.",
                    "Open the series for {client}.",
                    "Choose Pause, Stop or Edit - edits apply to the next invoice, not ones already sent.",
                ],
                "gist": "Open the recurring series in Smart Invoices and choose Pause, Stop or Edit.",
            },
            {
                "asks": [
                    "What time of day do recurring invoices actually go out?",
                    "My recurring invoices are arriving at odd hours for clients in {country}. Why?",
                    "When exactly will the next recurring invoice for {client} be sent?",
                    "recurring invoice went out at 9 am my time but client is in {country}, can that change?",
                ],
                "answer": (
                    "Recurring Smart Invoices are sent at 9:00 in your workspace time zone, not your "
                    "client's. You can check or change the time zone under Settings > Workspace, and "
                    "each series shows its next send date at the top."
                ),
                "gist": "Recurring invoices go out at 9:00 in the workspace time zone, which is set under Settings > Workspace.",
            },
        ],
    },
    {
        "title": "late-payment reminders",
        "intents": [
            {
                "asks": [
                    "Can Lumen Ledger remind clients automatically when they pay late?",
                    "how do i turn on payment reminders",
                    "{client} is always late paying. Is there an automatic nudge I can set up?",
                    "Could you explain how late-payment reminders work?",
                    "set up overdue reminders?",
                    "I'm tired of chasing {client} for money every month. Can the system do it for me?",
                ],
                "answer": [
                    "Automatic reminders are built in:",
                    "Go to Settings > Reminders.",
                    "Turn on late-payment reminders - by default they go out 3, 7 and 14 days after the due date.",
                    "Adjust the wording or days and click Save. Reminders stop once the invoice is paid.",
                ],
                "gist": "Turn on reminders under Settings > Reminders; they go out 3, 7 and 14 days after the due date.",
            },
            {
                "asks": [
                    "Please stop sending reminders to {client}, they're on a payment plan with us.",
                    "can i turn off reminders for just one client",
                    "Is there a way to exclude {client} from automatic reminders?",
                    "We have a friendly arrangement with {client}, how do I keep the system from chasing them?",
                ],
                "answer": [
                    "You can switch reminders off per client:",
                    "Open the client card for {client}.",
                    "Under Reminders, choose Off.",
                    "Click Save - your other clients keep getting reminders as usual.",
                ],
                "gist": "Open the client card and set Reminders to Off.",
            },
            {
                "asks": [
                    "A client complained they got a reminder for {inv} after paying it. Why?",
                    "why did my client get a late reminder when they already paid by bank transfer",
                    "{client} paid {inv} last {day} but still got a reminder. Whats going on",
                    "Embarrassing - {client} got chased for {inv} even though they paid. How do I prevent this?",
                ],
                "answer": (
                    "Reminders stop as soon as an invoice is marked paid. Card and Autopay payments do "
                    "this automatically, but bank transfers need to be recorded: open {inv}, click Record "
                    "payment, and reminders stop right away."
                ),
                "gist": "Record bank transfer payments on the invoice so reminders stop.",
            },
        ],
    },
    {
        "title": "currencies",
        "intents": [
            {
                "asks": [
                    "Can I invoice {client} in {currency}?",
                    "do you support {currency}?",
                    "I have a client in {country}. Can the invoice be in their local currency?",
                    "multi currency invoicing possible?",
                    "Hello, what currencies can I bill in? Most of my clients pay in {currency}.",
                    "need to send {client} an invoice in {currency} not dollars",
                ],
                "answer": [
                    "Yes - we support more than 40 currencies. To bill in {currency}:",
                    "Open the client card for {client}.",
                    "Set Default currency to {currency}.",
                    "Create the Smart Invoice as usual and it will use that currency.",
                ],
                "gist": "Set the default currency on the client card; more than 40 currencies are supported.",
            },
            {
                "asks": [
                    "My reports show everything in USD but I get paid in {currency}. Why?",
                    "how are foreign currency invoices shown in the Ledger tab?",
                    "Can I change my workspace base currency to {currency}?",
                    "which exchange rate do you use for reports",
                    "{client} paid {amount} {currency} but the Ledger tab shows a different number. Why?",
                    "The totals in the Ledger tab don't match my {currency} invoices, is something broken?",
                ],
                "answer": (
                    "Your Ledger tab reports in the workspace base currency, converting other currencies "
                    "at that day's exchange rate. The invoice itself always stays in the currency your "
                    "client was billed in. You can change the base currency under Settings > Workspace "
                    "until you send your first invoice."
                ),
                "gist": "Reports use the workspace base currency at the daily exchange rate; invoices keep their own currency.",
            },
        ],
    },
    {
        "title": "taxes and VAT",
        "intents": [
            {
                "asks": [
                    "How do I add VAT to my invoices?",
                    "need to charge {tax} on some line items, how",
                    "Where do I set up tax rates? I'm in {country}.",
                    "Can one line item have two taxes, like state and city tax?",
                    "add {tax} to invoice??",
                    "I'm registered for {tax} now. What do I change so my invoices include it?",
                ],
                "answer": [
                    "Tax rates live in your workspace settings:",
                    "Go to Settings > Taxes and click Add tax rate.",
                    "Enter the name, like {tax}, and the percentage.",
                    "On any Smart Invoice, pick up to 2 taxes per line item.",
                ],
                "gist": "Add tax rates under Settings > Taxes and pick up to 2 per line item.",
            },
            {
                "asks": [
                    "Where do I put my VAT number so it shows on invoices?",
                    "my tax ID isnt printing on the invoice",
                    "{client} needs their VAT number on the invoice, where do I add it?",
                    "Reverse charge note for an EU business client - is that supported?",
                    "Where does the tax ID for {client} go? They are a business in {country}.",
                    "Our accountant says invoice {inv} is missing our tax ID. How do I fix that for next time?",
                ],
                "answer": [
                    "Tax IDs are handled in two places:",
                    "Add your own number under Settings > Taxes > Tax ID - it prints on every invoice.",
                    "Add your client's number on their client card.",
                    "For EU business clients, turn on Reverse charge on the client card to add the note automatically.",
                ],
                "gist": "Your tax ID goes under Settings > Taxes; the client's goes on their client card.",
            },
        ],
    },
    {
        "title": "refunds",
        "intents": [
            {
                "asks": [
                    "How do I refund {client} for {inv}?",
                    "client overpaid, need to give {amount} {currency} back",
                    "refund a payment pls",
                    "Is it possible to do a partial refund on {inv}?",
                    "I accidentally charged {client} twice. How do I send one payment back?",
                ],
                "answer": [
                    "You can refund straight from the Ledger tab:",
                    "Open the Ledger tab and find the payment for {inv}.",
                    "Click Refund and choose the full or a partial amount.",
                    "Confirm - it reaches your client in 5-10 business days. The original processing fee isn't returned.",
                ],
                "gist": "Open the payment in the Ledger tab and click Refund; it takes 5-10 business days.",
            },
            {
                "asks": [
                    "Can I get a refund on my {plan} subscription? I forgot to cancel.",
                    "charged for annual plan by mistake, refund?",
                    "I was billed for another month of {plan} but barely used it. Refund possible?",
                    "what's your refund policy for the subscription itself",
                    "We switched to the yearly {plan} plan last {day} and regret it. Can we get our money back?",
                ],
                "answer": (
                    "Annual plans can be refunded in full within 14 days of the charge - just reply here "
                    "with the date of the charge. Monthly plans aren't refunded, but you keep full access "
                    "until the end of the period you paid for."
                ),
                "gist": "Annual plans are refundable within 14 days; monthly plans are not refunded.",
            },
            {
                "asks": [
                    "The refund for {inv} still hasn't reached my client after a week",
                    "how long do refunds take to show up",
                    "{client} says they never got the refund I sent on {day}.",
                    "Refunded {client} ages ago and they keep emailing me about it. Where is the money?",
                ],
                "answer": (
                    "Refunds take 5-10 business days to reach your client, depending on their bank. You "
                    "can see the status on the payment in the Ledger tab. If it shows Completed and 10 "
                    "business days have passed, ask your client to contact their bank with the refund "
                    "reference shown there."
                ),
                "gist": "Refunds take 5-10 business days; the status is on the payment in the Ledger tab.",
            },
        ],
    },
    {
        "title": "Autopay",
        "intents": [
            {
                "asks": [
                    "Autopay failed for {client}. What happens now?",
                    "autopay didnt go through on {inv}",
                    "Why did Autopay fail on {inv}? The card should be fine.",
                    "Does Autopay try again if a card is declined?",
                    "Autopay keeps failing for {client} and I'm losing patience. What is going on?",
                ],
                "answer": (
                    "When an Autopay charge fails, we retry 3 times over 5 days and email your client "
                    "each time asking them to update their card in the client portal. If the last retry "
                    "fails, {inv} is marked Overdue and your normal reminders take over. The decline "
                    "reason is shown on the payment in the Ledger tab."
                ),
                "gist": "Failed Autopay charges are retried 3 times over 5 days before the invoice is marked Overdue.",
            },
            {
                "asks": [
                    "How does my client update the card used for Autopay?",
                    "{client} got a new card, how do they change it for autopay",
                    "Can I enter my client's new card details for them?",
                    "Card on file for {client} expired. What should they do before the next charge?",
                ],
                "answer": [
                    "Card details are managed by your client, for security:",
                    "Open the client card for {client} and click Copy portal link.",
                    "Send it to your client - they choose Payment methods and add the new card.",
                ],
                "gist": "Clients update their own card in the client portal.",
            },
            {
                "asks": [
                    "need to switch off Autopay for {client}",
                    "How do I stop charging {client} automatically?",
                    "turn off autopay for one client",
                    "{client} wants to pay manually from now on. How do I disable Autopay?",
                ],
                "answer": [
                    "Autopay is switched on or off per client:",
                    "Open the client card for {client}.",
                    "Turn off the Autopay toggle and click Save.",
                    "Future invoices wait for your client to pay them in the client portal.",
                ],
                "gist": "Switch Autopay off with the toggle on the client card.",
            },
        ],
    },
    {
        "title": "exporting data",
        "intents": [
            {
                "asks": [
                    "How do I export my transactions to CSV?",
                    "need a csv of all payments from {month} for my accountant",
                    "export ledger to excel?",
                    "Could you tell me how to download last quarter's invoices as a spreadsheet?",
                    "where is the export button, cant find it anywhere",
                    "My accountant wants a CSV of {month} by {day}. How do I get it?",
                    "Tax season again. How do I get everything from {month} onwards into one file?",
                ],
                "answer": [
                    "Exports come from the Ledger tab:",
                    "Open the Ledger tab and click Export.",
                    "Choose the date range you need and pick CSV.",
                    "Click Download - very large exports are emailed to the email on your account instead.",
                ],
                "gist": "Use Export in the Ledger tab, pick a date range and choose CSV.",
            },
            {
                "asks": [
                    "Can I export my client list too?",
                    "how to get all client cards into a spreadsheet",
                    "We're moving to a new CRM, can I download all clients with their details?",
                    "Is there a way to export just the client card for {client}?",
                ],
                "answer": [
                    "Yes, client cards can be exported on their own:",
                    "Open Clients.",
                    "Select all clients, or just {client}, and click Export.",
                    "Choose CSV - the file includes currencies, tax IDs and reminder settings from each card.",
                ],
                "gist": "Open Clients, select the client cards and click Export.",
            },
            {
                "asks": [
                    "Export says it will be emailed but nothing arrived",
                    "my csv export from {month} never showed up",
                    "Is there a row limit on CSV exports?",
                    "Exported the whole year on {day} and the file never came. What happened?",
                    "Waited all afternoon for my export email. Still nothing. Why?",
                ],
                "answer": (
                    "Exports over 10,000 rows are emailed to the email on your account instead of "
                    "downloading, usually within 15 minutes. If nothing has arrived, check your spam "
                    "folder, then try a shorter date range so it downloads directly."
                ),
                "gist": "Exports over 10,000 rows are emailed within about 15 minutes instead of downloading.",
            },
        ],
    },
    {
        "title": "changing plans",
        "intents": [
            {
                "asks": [
                    "How do I upgrade to {upplan}?",
                    "want to move to {upplan} plan, how",
                    "If I upgrade to {upplan} today, do I pay the full price?",
                    "Thinking of switching to {upplan} for the extra seats. How does billing work?",
                    "upgrade plz, we need {upplan} before {day}",
                    "Upgrade to {upplan} now please, we just landed {client} as a client.",
                ],
                "answer": [
                    "Upgrades take effect right away:",
                    "Go to Settings > Billing and click Change plan.",
                    "Choose {upplan} and confirm.",
                    "You're charged a prorated amount for the rest of this billing period.",
                ],
                "gist": "Change plan under Settings > Billing; upgrades are immediate and prorated.",
            },
            {
                "asks": [
                    "How can I downgrade to {downplan}?",
                    "we're a smaller team now, can we drop to {downplan}",
                    "When does a downgrade kick in? Don't want to lose features mid-month.",
                    "downgrade plan?",
                    "Money is tight this quarter. Can we move down to {downplan} without losing our invoices?",
                    "Can we downgrade to {downplan} from {month} onwards?",
                ],
                "answer": [
                    "Downgrades apply at the end of your current billing period:",
                    "Go to Settings > Billing and click Change plan.",
                    "Choose {downplan} and confirm.",
                    "You keep your current features until the period ends, and all invoices stay put.",
                ],
                "gist": "Downgrade under Settings > Billing; it applies at the end of the billing period.",
            },
            {
                "asks": [
                    "What's the difference between Starter, Growth and Scale?",
                    "which plan has custom branding",
                    "Does {plan} include team members?",
                    "Trying to pick a plan for a 3-person agency. Which one makes sense?",
                    "Is {plan} enough for a team of {n}?",
                ],
                "answer": (
                    "Starter is for one person, Growth adds up to 5 team members plus custom branding, "
                    "and Scale has unlimited team members and priority support. All plans include Smart "
                    "Invoices, Autopay and integrations. You can compare them under Settings > Billing > "
                    "Change plan."
                ),
                "gist": "Starter has 1 member, Growth up to 5 plus branding, Scale is unlimited.",
            },
        ],
    },
    {
        "title": "cancelling",
        "intents": [
            {
                "asks": [
                    "How do I cancel my subscription?",
                    "cancel account please",
                    "We're closing the business at the end of {month}. How do we cancel Lumen Ledger?",
                    "I want to cancel. Honestly the last few weeks have been frustrating.",
                    "Where's the cancel button? I've looked everywhere.",
                    "We're moving to another tool after {month}. Please tell me how to cancel.",
                    "How do I cancel our {plan} plan?",
                ],
                "answer": [
                    "Sorry to see you go. The workspace Owner can cancel like this:",
                    "Export anything you need from the Ledger tab first.",
                    "Go to Settings > Billing and click Cancel plan.",
                    "Confirm - your workspace stays read-only for 90 days, then it's deleted.",
                ],
                "gist": "The Owner cancels under Settings > Billing; the workspace is read-only for 90 days.",
            },
            {
                "asks": [
                    "What happens to my data after I cancel?",
                    "I cancelled last {month} by mistake - can I get my workspace back?",
                    "if i cancel can i still look at old invoices",
                    "Can we reactivate? We cancelled on {day} and changed our minds.",
                    "If we cancel our {plan} plan, can we still export our data afterwards?",
                ],
                "answer": (
                    "After you cancel, your workspace is read-only for 90 days: you can still view and "
                    "export everything, but new invoices and Autopay charges stop. To undo it within those "
                    "90 days, go to Settings > Billing and click Reactivate. After that the workspace is "
                    "permanently deleted."
                ),
                "gist": "Cancelled workspaces are read-only for 90 days and can be reactivated in that time.",
            },
        ],
    },
    {
        "title": "team members",
        "intents": [
            {
                "asks": [
                    "How do I add a team member?",
                    "can my bookkeeper get access to our workspace",
                    "I need to invite {n} colleagues. How?",
                    "invite teammate??",
                    "Our new hire starts on {day}, how do I give them access?",
                    "I need to give {n} people in accounts access by {day}.",
                ],
                "answer": [
                    "Growth includes up to 5 team members and Scale is unlimited. To invite someone:",
                    "Go to Settings > Team and click Invite member.",
                    "Enter their email address and pick a role.",
                    "They get an invite link that's valid for 7 days.",
                ],
                "gist": "Invite people under Settings > Team; invite links last 7 days.",
            },
            {
                "asks": [
                    "Invite button is greyed out, why",
                    "My colleague's invite link says expired",
                    "Can I have more than 5 people on {plan}?",
                    "Tried to add a sixth person on Growth and it won't let me. What gives?",
                    "We're on {plan} and I can't add anyone else.",
                ],
                "answer": (
                    "Starter includes only the Owner, Growth allows up to 5 team members and Scale is "
                    "unlimited, so Invite is greyed out once you reach your limit. Invite links expire "
                    "after 7 days - open Settings > Team and click Resend next to the person's name."
                ),
                "gist": "Seat limits are 1 on Starter, 5 on Growth and unlimited on Scale; invites expire after 7 days.",
            },
            {
                "asks": [
                    "Someone left the company, how do I remove them?",
                    "remove user from workspace",
                    "Please help, a former contractor still has access to our workspace.",
                    "How do I take away access for a team member who left on {day}?",
                ],
                "answer": [
                    "You can remove access right away:",
                    "Go to Settings > Team.",
                    "Click the three dots next to their name and choose Remove.",
                    "They're signed out immediately, and their past activity stays in the Ledger tab.",
                ],
                "gist": "Remove people under Settings > Team; they are signed out immediately.",
            },
        ],
    },
    {
        "title": "roles and permissions",
        "intents": [
            {
                "asks": [
                    "What can the Accountant role do?",
                    "whats the difference between admin and viewer",
                    "I want my bookkeeper to see invoices but not change settings. Which role?",
                    "Can a {role} create invoices?",
                    "explain roles please",
                    "We're hiring a part-time bookkeeper who starts on {day}. Which role should they get?",
                    "Does a {role} see our billing details?",
                ],
                "answer": (
                    "There are four roles. The Owner controls billing and can delete the workspace, and "
                    "Admins can do everything except billing and deletion. Accountants can create invoices, "
                    "record payments and export from the Ledger tab, but can't change settings. Viewers "
                    "have read-only access."
                ),
                "gist": "Roles are Owner, Admin, Accountant and Viewer, from full control to read-only.",
            },
            {
                "asks": [
                    "How do I change someone's role to {role}?",
                    "need to make my business partner the owner",
                    "How do I transfer ownership of the workspace? I'm leaving the company.",
                    "promote teammate to {role}",
                    "Please tell me how to set a colleague's role to {role} before {day}.",
                ],
                "answer": [
                    "Roles are changed in Settings > Team:",
                    "Click the three dots next to the person's name.",
                    "Choose Change role and pick {role}, or choose Transfer ownership (Owner only).",
                    "Confirm - the change applies the next time they load a page.",
                ],
                "gist": "Change roles or transfer ownership from Settings > Team.",
            },
        ],
    },
    {
        "title": "two-factor authentication",
        "intents": [
            {
                "asks": [
                    "How do I turn on two-factor authentication?",
                    "setup 2fa",
                    "Is there 2FA? Our security team requires it.",
                    "Can I force everyone in the workspace to use 2FA?",
                    "Our contract with {client} requires 2FA on all our tools. How do I turn it on?",
                    "We had a scare last {day}. How do I lock down logins with 2FA?",
                ],
                "answer": [
                    "Two-factor authentication works with any authenticator app:",
                    "Go to Profile > Security > Two-factor authentication.",
                    "Scan the QR code and enter the 6-digit code.",
                    "Save your 10 backup codes somewhere safe.",
                    "Owners can require 2FA for everyone under Settings > Team.",
                ],
                "gist": "Turn on 2FA under Profile > Security and keep the 10 backup codes.",
            },
            {
                "asks": [
                    "Lost my phone and can't get my 2FA code",
                    "new phone, authenticator app is empty, locked out",
                    "I'm locked out because of two-factor. Please help, invoices are due on {day}.",
                    "switched phones and now my 2fa won't work",
                    "Lost my {device} over the weekend and now I can't get past the 2FA screen.",
                    "2FA locked me out right before the invoice for {client} was due. Help!",
                ],
                "answer": (
                    "On the sign-in page, choose Use a backup code and enter one of the 10 codes you saved "
                    "when you turned on 2FA. If you don't have them, the workspace Owner can reset your 2FA "
                    "under Settings > Team, or we can verify your identity, which takes up to 2 business days."
                ),
                "gist": "Use a backup code, ask the Owner to reset 2FA, or go through identity verification.",
            },
        ],
    },
    {
        "title": "password resets",
        "intents": [
            {
                "asks": [
                    "forgot my password",
                    "How do I reset my password?",
                    "cant log in, password not working",
                    "Could you send me a password reset link please?",
                    "I've tried my password five times and it's not working. Help.",
                    "password reset before {day}? need to send invoices",
                    "Locked out and {client} is waiting on an invoice. I forgot my password.",
                ],
                "answer": [
                    "Let's get you back in:",
                    "On the sign-in page, click Forgot password.",
                    "A reset link is sent to the email on your account.",
                    "Open it within 30 minutes and choose a new password.",
                ],
                "gist": "Click Forgot password on the sign-in page and use the link within 30 minutes.",
            },
            {
                "asks": [
                    "Password reset email never arrives",
                    "I don't have access to my old work email anymore, how do I reset my password?",
                    "reset link says expired",
                    "Requested a reset three times this {day} and got nothing. Ridiculous.",
                    "The reset email hasn't come since {day} morning and yes, I checked spam.",
                ],
                "answer": (
                    "Reset links go to the email on your account and expire after 30 minutes, so request a "
                    "fresh one if yours is older. Check your spam folder too. If you can't access that "
                    "email anymore, reply here and we'll verify your identity, which takes up to 2 "
                    "business days."
                ),
                "gist": "Reset links expire after 30 minutes; without access to the email, identity verification is needed.",
            },
        ],
    },
    {
        "title": "bank payouts",
        "intents": [
            {
                "asks": [
                    "Where's my payout? {client} paid on {day}.",
                    "payout still not in my bank account",
                    "It's been 3 days and the money from {inv} isn't in my bank. What's going on?",
                    "how long do payouts take",
                    "Why is my payout taking so long? I need that money for payroll.",
                ],
                "answer": (
                    "Payouts take 2 business days to reach your bank after they're sent, and weekends and "
                    "bank holidays don't count. They follow your payout schedule, so check Ledger tab > "
                    "Payouts for the expected arrival date. If a payout is more than 5 business days late, "
                    "reply with the payout date and we'll trace it."
                ),
                "gist": "Payouts take 2 business days to arrive and follow the payout schedule.",
            },
            {
                "asks": [
                    "Can I get paid out daily instead of weekly?",
                    "how do i change payout day to {day}",
                    "What payout schedules do you offer?",
                    "switch payouts to monthly",
                    "I'd prefer one payout a week, on {day} ideally. Possible?",
                ],
                "answer": [
                    "You can change your payout schedule at any time:",
                    "Go to Settings > Payouts.",
                    "Choose daily, weekly on {day}, or monthly on the 1st.",
                    "Click Save - the next payout follows the new schedule.",
                ],
                "gist": "Change the payout schedule under Settings > Payouts: daily, weekly or monthly.",
            },
            {
                "asks": [
                    "My first payout is on hold?",
                    "New workspace - why hasn't my first payout been sent yet?",
                    "first payout pending for a week, is that normal",
                    "Signed up on {day}, got paid by {client}, but no payout yet. Normal?",
                ],
                "answer": (
                    "Yes, that's normal: the first payout for a new workspace is held for 7 days while we "
                    "verify your bank details. After that, payouts follow your payout schedule and take 2 "
                    "business days to arrive."
                ),
                "gist": "The first payout of a new workspace is held for 7 days for verification.",
            },
        ],
    },
    {
        "title": "receipts",
        "intents": [
            {
                "asks": [
                    "Do clients get a receipt when they pay?",
                    "{client} needs a receipt for {inv}",
                    "how to resend a receipt",
                    "Client lost their receipt for {inv}, can I send it again?",
                    "Does {client} get proof of payment automatically when Autopay charges them?",
                ],
                "answer": [
                    "Clients get a receipt by email automatically when a payment is recorded. To send it again:",
                    "Open the Ledger tab and find the payment for {inv}.",
                    "Click Resend receipt - your client can also download it from the client portal.",
                ],
                "gist": "Receipts are emailed automatically; resend one from the payment in the Ledger tab.",
            },
            {
                "asks": [
                    "Where can I download receipts for my Lumen Ledger subscription?",
                    "need our {plan} subscription receipts for my accountant",
                    "need my billing history for the tax return",
                    "Our finance team wants every Lumen Ledger charge since {month}. Where are they?",
                    "where r the receipts for what you charge us each month",
                ],
                "answer": [
                    "Your own subscription receipts are in Billing history:",
                    "Go to Settings > Billing.",
                    "Open Billing history.",
                    "Click any charge to download its PDF receipt.",
                ],
                "gist": "Subscription receipts are under Settings > Billing > Billing history.",
            },
        ],
    },
    {
        "title": "invoice numbering",
        "intents": [
            {
                "asks": [
                    "How do I change the invoice number format?",
                    "I want my invoices to continue from my old system. Last one was {inv}.",
                    "change prefix from INV to something else?",
                    "numbering is off, how do I fix it",
                    "Can the next invoice be numbered right after {inv}?",
                    "Switching from spreadsheets in {month}. How do I set the starting invoice number?",
                ],
                "answer": [
                    "Numbering is set in your workspace settings:",
                    "Go to Settings > Invoices > Numbering.",
                    "Set the prefix, like INV-, and the next number.",
                    "Click Save - new invoices continue from there.",
                ],
                "gist": "Set the prefix and next number under Settings > Invoices > Numbering.",
            },
            {
                "asks": [
                    "There's a gap in my invoice numbers, is that a problem?",
                    "Can I reuse {inv}? It was sent by mistake.",
                    "why did my invoice skip a number",
                    "I need to reuse the number from a voided invoice",
                    "Why did the numbers jump after {inv}? The next one is way higher.",
                ],
                "answer": (
                    "Numbers are assigned only when an invoice is sent, so drafts never use one up. A gap "
                    "usually means the next number was changed under Settings > Invoices > Numbering. Sent "
                    "numbers can't be reused, even after voiding, which keeps your records audit-friendly."
                ),
                "gist": "Numbers are assigned on sending and sent numbers can't be reused.",
            },
        ],
    },
    {
        "title": "custom branding",
        "intents": [
            {
                "asks": [
                    "How do I add my logo to invoices?",
                    "upload logo",
                    "Can I change the invoice colors to match our brand?",
                    "The logo on my invoices looks blurry. Any tips?",
                    "Is custom branding available on {plan}?",
                    "We just moved to {upplan}. How do I put our logo on invoices?",
                    "{client} said our invoices look generic. How can I brand them?",
                ],
                "answer": [
                    "Custom branding is included on Growth and Scale (not Starter):",
                    "Go to Settings > Branding.",
                    "Upload a PNG or SVG logo up to 2 MB - SVG stays sharpest - and pick your brand color.",
                    "Click Save - it applies to Smart Invoices, emails and the client portal.",
                ],
                "gist": "Upload a logo and brand color under Settings > Branding on Growth or Scale.",
            },
            {
                "asks": [
                    "I uploaded a logo but it's not showing on the invoice",
                    "Branding disappeared after downgrading to Starter",
                    "logo upload keeps failing",
                    "Logo shows fine in settings but not on {inv} when I open it.",
                    "Why does {inv} still have the old plain look after I added our logo?",
                ],
                "answer": (
                    "Logos must be PNG or SVG files under 2 MB, and branding only shows on the Growth and "
                    "Scale plans. Invoices sent before you uploaded keep their old look, but new ones and "
                    "the client portal update right away."
                ),
                "gist": "Logos must be PNG or SVG under 2 MB and branding needs Growth or Scale.",
            },
        ],
    },
    {
        "title": "the client portal",
        "intents": [
            {
                "asks": [
                    "What is the client portal?",
                    "how do my clients log in to pay",
                    "Does {client} need an account to pay an invoice?",
                    "Where do I find the portal link for {client}?",
                    "Can clients see all their old invoices somewhere?",
                    "{client} wants to pay {inv} online. Where do they go?",
                ],
                "answer": (
                    "The client portal lets clients view invoices, pay by card or bank transfer, download "
                    "receipts and save a card for Autopay. They don't need a password: each client card "
                    "has its own secure portal link, which you can copy from the client card."
                ),
                "gist": "The client portal shows invoices and receipts; each client card has a portal link.",
            },
            {
                "asks": [
                    "{client} says their portal link expired",
                    "client can't open the portal, says link not valid",
                    "How long do portal links last?",
                    "{client} is annoyed the payment link stopped working. How do I fix it?",
                ],
                "answer": (
                    "Portal links expire after 30 days for security. Your client can request a fresh link "
                    "from the portal sign-in screen, or you can open the client card for {client} and click "
                    "Copy portal link to send a new one."
                ),
                "gist": "Portal links expire after 30 days; copy a new one from the client card.",
            },
        ],
    },
    {
        "title": "partial payments",
        "intents": [
            {
                "asks": [
                    "Can clients pay an invoice in installments?",
                    "{client} wants to pay half of {inv} now and the rest next month",
                    "allow partial payment on invoice",
                    "Is there a minimum amount for partial payments?",
                    "{client} can't pay {inv} all at once. What are my options?",
                ],
                "answer": [
                    "Yes - turn on partial payments per invoice:",
                    "Open {inv} in Smart Invoices and click Edit.",
                    "Turn on Allow partial payments and set a minimum amount if you want one.",
                    "Save - the status shows Partially paid until the balance is cleared.",
                ],
                "gist": "Turn on Allow partial payments on the invoice.",
            },
            {
                "asks": [
                    "Client paid {amount} {currency} by bank transfer, only part of the invoice. How do I record that?",
                    "how to mark an invoice as partly paid",
                    "Do reminders keep going if {inv} is only partly paid?",
                    "{client} sent part of the money for {inv}. How do I log it?",
                ],
                "answer": [
                    "Here's how to record it:",
                    "Open {inv} and click Record payment.",
                    "Enter the amount received and the date.",
                    "Save - it shows Partially paid, and reminders continue for the remaining balance.",
                ],
                "gist": "Use Record payment on the invoice and enter the amount received.",
            },
        ],
    },
    {
        "title": "credit notes",
        "intents": [
            {
                "asks": [
                    "How do I issue a credit note?",
                    "need to credit {client} for part of {inv}",
                    "I made a mistake on {inv} after sending it. Can I just delete it?",
                    "credit note for a cancelled order?",
                    "Can I delete a sent invoice?",
                ],
                "answer": [
                    "Sent invoices can't be deleted, but a credit note fixes it cleanly:",
                    "Open {inv} and click More.",
                    "Choose Create credit note and enter the full or partial amount.",
                    "Send it - it's linked to the original invoice and numbered with the CN- prefix.",
                ],
                "gist": "Open the invoice, click More and choose Create credit note.",
            },
            {
                "asks": [
                    "What's the difference between voiding and a credit note?",
                    "should I void {inv} or issue a credit note",
                    "void vs credit note??",
                    "{client} hasn't paid {inv} and we agreed to scrap it. Void it or credit it?",
                ],
                "answer": (
                    "Void an invoice when it was sent in error and nothing was paid - it stays in your "
                    "records marked Void. Use a credit note when you need to reduce or reverse an amount, "
                    "especially if the client already paid. Both keep your invoice numbers intact."
                ),
                "gist": "Void unpaid invoices sent in error; use credit notes to reduce or reverse amounts.",
            },
        ],
    },
    {
        "title": "integrations",
        "intents": [
            {
                "asks": [
                    "Do you integrate with {tool}?",
                    "how to connect {tool}",
                    "Can Lumen Ledger sync with my accounting software?",
                    "Our accountant uses {tool}. Can invoices flow there automatically?",
                    "We just switched our books to {tool}. Can Lumen Ledger push payments there?",
                ],
                "answer": [
                    "Yes - we integrate with QuickBooks, Xero and FreeAgent on every plan:",
                    "Go to Settings > Integrations.",
                    "Click Connect next to {tool} and sign in to approve access.",
                    "Invoices, payments and client cards then sync every hour.",
                ],
                "gist": "Connect QuickBooks, Xero or FreeAgent under Settings > Integrations.",
            },
            {
                "asks": [
                    "{tool} sync isn't picking up new invoices",
                    "invoices missing in {tool} since {day}",
                    "How often does the sync run? Payment from {client} isn't showing in {tool} yet.",
                    "Sync to {tool} seems stuck again, this is getting old",
                    "Invoice {inv} is in Lumen Ledger but not in {tool}. Why?",
                ],
                "answer": (
                    "Sync runs every hour, so new items can take up to 60 minutes to appear in {tool}. To "
                    "push changes now, go to Settings > Integrations and click Sync now. If items are still "
                    "missing, disconnect and connect again - nothing is deleted on either side."
                ),
                "gist": "Integrations sync every hour; use Sync now under Settings > Integrations.",
            },
        ],
    },
    {
        "title": "the mobile app",
        "intents": [
            {
                "asks": [
                    "Is there a mobile app?",
                    "can i send invoices from my {device}",
                    "Does the app work on {device}?",
                    "What can I do in the mobile app vs the web?",
                    "I'm on job sites all day. Can I invoice from my {device}?",
                    "Does the app let me record a payment from {client} on the go?",
                ],
                "answer": (
                    "Yes - the Lumen Ledger app is on iOS and Android. You can create and send Smart "
                    "Invoices, record payments, check the Ledger tab and get payment notifications. "
                    "Branding, integrations and team settings are managed on the web."
                ),
                "gist": "The iOS and Android app handles invoices and payments; settings stay on the web.",
            },
            {
                "asks": [
                    "not getting payment notifications on my {device}",
                    "app push notifications stopped working",
                    "Why don't I get a ping on my {device} when a client pays?",
                    "notifications on the app are silent since {day}",
                    "My phone didn't buzz when {client} paid {inv}. Notifications broken?",
                ],
                "answer": [
                    "Let's get notifications working again:",
                    "In the app, go to Profile > Notifications and check that Payments is on.",
                    "Make sure your {device} settings allow notifications from Lumen Ledger.",
                    "Sign out and back in to refresh the connection.",
                ],
                "gist": "Check Profile > Notifications in the app and the device notification settings.",
            },
        ],
    },
    {
        "title": "data deletion",
        "intents": [
            {
                "asks": [
                    "I want all my data deleted",
                    "How do I permanently delete my workspace?",
                    "GDPR deletion request for our account",
                    "please delete everything, we're done",
                    "We shut down on {day}. How do we make sure our data is erased?",
                    "We stop using Lumen Ledger in {month}. How do we wipe the workspace after that?",
                ],
                "answer": [
                    "The workspace Owner can request full deletion:",
                    "Export anything you need from the Ledger tab first.",
                    "Go to Settings > Workspace and click Delete workspace.",
                    "Confirm - everything is permanently deleted within 30 days, and a confirmation goes to the email on your account.",
                ],
                "gist": "The Owner deletes the workspace under Settings > Workspace; deletion completes within 30 days.",
            },
            {
                "asks": [
                    "One of my clients asked us to delete their data",
                    "{client} wants their information removed, what do I do",
                    "Can I delete a client card that has paid invoices?",
                    "Got a formal data deletion request from {client}. Steps?",
                ],
                "answer": [
                    "Client cards with paid invoices can't be removed outright, but you can erase the personal details:",
                    "Open the client card for {client}.",
                    "Click More and choose Delete client data.",
                    "Invoice records you're legally required to keep are anonymized rather than deleted.",
                ],
                "gist": "Use Delete client data on the client card; required invoice records are anonymized.",
            },
        ],
    },
    {
        "title": "service status",
        "intents": [
            {
                "asks": [
                    "Is Lumen Ledger down?",
                    "site not loading for me",
                    "Getting errors everywhere since this morning, is there an outage?",
                    "Smart Invoices page just spins. Something wrong on your side?",
                    "where do i check system status",
                    "Can't load the Ledger tab since {day} morning. Is it just me?",
                ],
                "answer": (
                    "You can check live status on the Lumen Ledger status page, linked in the footer of the "
                    "sign-in page and in the Help menu. Incidents are posted there with updates, and you "
                    "can subscribe to be notified. Invoices and payments made during an incident are "
                    "queued, not lost."
                ),
                "gist": "Check the status page linked from the sign-in page footer and the Help menu.",
            },
            {
                "asks": [
                    "Did my invoices go out during yesterday's outage?",
                    "When is scheduled maintenance?",
                    "Will Autopay charges still happen if you're down on {day}?",
                    "Worried the outage on {day} lost our payment to {client}",
                ],
                "answer": (
                    "Scheduled maintenance is announced on the status page 3 days ahead and usually happens "
                    "early Sunday morning UTC. During any downtime, Smart Invoices and Autopay charges are "
                    "queued and go out automatically once we're back, so nothing is lost."
                ),
                "gist": "Maintenance is announced 3 days ahead; invoices and Autopay charges are queued during downtime.",
            },
        ],
    },
]

# --------------------------------------------------------------------------------------
# Multi-turn pieces: an older off-brand reply (trained with weight 0) and a follow-up.
# --------------------------------------------------------------------------------------

OLD_REPLIES = [
    "Thank you for contacting Lumen Ledger. Please see the help center article on {title} for more information.",
    "Please refer to our documentation about {title}.",
    "We have received your request regarding {title}. Our team will look into it.",
    "Information about {title} can be found in the settings. Let us know if there is anything else.",
    "This is a known topic. Kindly consult the FAQ section on {title}.",
]

CLARIFY_FOLLOW_UPS = [
    "That doesn't really answer it. Can you give me the actual steps?",
    "ok but where exactly do I find that?",
    "Sorry, could you be a bit more specific?",
    "I already looked in the help center. What do I actually need to do?",
    "Can you just tell me directly?",
    "hm, still confused. what should I do?",
    "That's pretty vague. What's the short answer?",
]

NEXT_CONNECTORS = [
    "Thanks. Another question: ",
    "Ok, noted. One more thing: ",
    "Right. Also: ",
    "Fine. Different question: ",
]

# --------------------------------------------------------------------------------------
# Worse answers for the preference pairs: rambling, off-brand, or curt. None of them
# carries the greeting or the signature.
# --------------------------------------------------------------------------------------

RAMBLING_OPENERS = [
    "Thank you so much for reaching out to us today, we really appreciate you taking the time to write in and we completely understand how important this is for your business.",
    "Great question, and honestly one that we get asked quite a lot, so you are definitely not alone in wondering about this!",
    "Thanks for your message! I hope your week is going well so far and that everything else with your account has been smooth.",
    "Hello and welcome! Before I get into it, I just want to say that we are always working hard to make the product better for people like you.",
]
RAMBLING_MIDDLES = [
    "When it comes to {title}, there are quite a few different things that can come into play, and a lot of it depends on your settings, your plan and sometimes even which browser you are using.",
    "There is a lot to say about {title}, and the exact answer can vary a little from workspace to workspace depending on how things were originally set up.",
    "So, {title}. This is actually one of those areas where people have all kinds of different setups, so it is hard to give a single answer that fits everyone.",
]
RAMBLING_TAILS = [
    "If that does not quite work, you could also try logging out and back in, clearing your cache, or simply waiting a little while, because sometimes these things sort themselves out. Please do not hesitate to get in touch again if you have any other questions at all, we are always happy to help!",
    "Otherwise it might be worth having a look around the settings or the help center, since there are lots of useful articles there that cover this and many related topics in more detail. Anyway, I hope this helps somewhat and have a wonderful rest of your day!",
    "In any case, things change quite often on our side, so some of this might already be slightly different by the time you read it. Feel free to write back whenever you like, and thanks again for being such a valued customer!",
]
OFF_BRAND_TEMPLATES = [
    "Dear Customer,\n\nWe acknowledge receipt of your inquiry regarding {title}. {gist} Should you require further assistance, please submit a new ticket.\n\nRegards,\nCustomer Service Department",
    "Yeah so basically: {gist} Should be fine after that, ping us if not lol",
    "Per our documentation on {title}: {gist} This message was generated automatically. Do not reply.",
    "Ugh, {title} again? Ok. {gist} That's about it.",
]
CURT_TEMPLATES = [
    "{gist}",
    "See the help center article on {title}.",
    "Check your settings.",
    "Not something I can help with here. Try the docs.",
]

# --------------------------------------------------------------------------------------
# Ticket classifier templates. Each template unambiguously belongs to its label:
# billing = charges, subscription, fees, payouts; bug = something broken;
# feature_request = a capability that does not exist; account = access, login,
# ownership, membership, closure; how_to = how to use an existing feature.
# --------------------------------------------------------------------------------------

TICKET_TEMPLATES = {
    "billing": [
        "I was charged twice for my {plan} subscription this month. Can you refund the duplicate charge?",
        "Why did my bill go up? I'm on {plan} and this month's charge is higher than usual.",
        "Our card was declined when renewing the {plan} plan on {day}. Will we lose access?",
        "I need a copy of the receipt for our {month} subscription charge for my accountant.",
        "We upgraded to {upplan} mid-month and the prorated charge looks wrong to me.",
        "Can we switch our {plan} plan from monthly to annual billing?",
        "Our payout from {day} still hasn't reached our bank account.",
        "Please add our VAT number to the receipts for our {plan} subscription.",
        "I cancelled last month but was still charged for {month}.",
        "The processing fee on the payment for {inv} seems higher than the rate on your pricing page.",
        "We were charged the {upplan} price in {month} even though we downgraded to Starter the month before.",
        "Is there a nonprofit discount on the {plan} plan? We're a registered charity.",
        "I'd like a refund for the annual {plan} plan, we signed up {n} days ago.",
        "The card on file for our subscription expires before the {month} charge. Can the charge be held until we update it?",
        "Our payout for {day} is {amount} {currency} less than what our clients paid us.",
        "We were charged in USD but our workspace is set to {currency}. Can the subscription be billed in {currency}?",
    ],
    "bug": [
        "The Export button in the Ledger tab does nothing when I click it in {browser}.",
        "Smart Invoice {inv} shows the wrong total - the tax is being added twice.",
        "The mobile app crashes every time I open a client card on my {device}.",
        "The recurring invoice for {client} was sent twice on {day}.",
        "I get an error page when I try to save my branding settings in {browser}. It just says something went wrong.",
        "The PDF download of {inv} is blank, just a white page.",
        "Dates on my invoices have shown in the wrong format since {day}'s update.",
        "The client portal shows {inv} as unpaid even though the payment appears in the Ledger tab.",
        "The {tool} sync duplicated all of our client cards on {day}.",
        "Our logo appears stretched on invoices in {browser}, but it looks fine in the preview.",
        "Reminder emails went out for {inv} even though it was marked paid on {day}.",
        "Search in Smart Invoices returns no results for {client}, but the client card exists.",
        "{inv} shows the USD symbol even though the client card for {client} is set to {currency}.",
        "The page freezes in {browser} whenever I add more than 20 line items to an invoice.",
        "Clicking Record payment on {inv} spins forever and the payment never saves.",
    ],
    "how_to": [
        "How do I set up a recurring invoice for {client} every {freq}?",
        "Where can I add a discount line to an invoice for {client}?",
        "How can I let {client} pay {inv} in two installments?",
        "What's the way to export all payments from {month} to CSV?",
        "How do I add my logo and brand color to invoices? We're on {upplan}.",
        "Can you explain how to issue a credit note against {inv}?",
        "How do I change the invoice number prefix so the next one follows {inv}?",
        "Where do I set the default currency to {currency} for {client}?",
        "How do I turn on automatic reminders for overdue invoices?",
        "What are the steps to connect {tool} to our workspace?",
        "How do I record a bank transfer payment against {inv}?",
        "How can I add {tax} at two different rates on one invoice?",
        "Where do I find the client portal link to send to {client}?",
        "How do I copy {inv} to make a new invoice for {client}?",
    ],
    "account": [
        "I'm locked out after losing my phone with the authenticator app. I need to send invoices by {day}.",
        "Please change the email on our account, the old one belonged to someone who left.",
        "I need to transfer ownership of our workspace to my business partner before I leave on {day}.",
        "The password reset link keeps expiring before I can use it.",
        "A former contractor still has access to our workspace, please help us remove them.",
        "We'd like our workspace and all of its data deleted permanently by the end of {month}.",
        "I have two workspaces under one login and want to merge them into the {client} one.",
        "My colleague's invite to join our workspace expired on {day}, can you resend it?",
        "Our workspace Owner left the company and nobody can access billing settings anymore.",
        "Please rename our workspace to {client}, we rebranded in {month}.",
        "I can't sign in because I no longer have access to the email I signed up with.",
        "Can you verify my identity so I can regain access to the {client} workspace?",
    ],
    "feature_request": [
        "It would be great if Smart Invoices supported {lang} invoice templates.",
        "Please add a dark mode to the web app, we work late and it's hard on the eyes.",
        "Could you add an integration with {tool2}? That's what our accountant uses.",
        "We'd love to schedule a one-off invoice to send on a future date, like next {day}.",
        "Feature idea: let clients pay with {paymethod} in the client portal.",
        "It would help a lot if the Ledger tab had a chart of monthly revenue.",
        "Please allow more than 2 taxes per line item, we need 3 for some clients in {country}.",
        "Would be nice to set reminder timing separately for each client, not just on or off.",
        "Please let us export reports as PDF as well as CSV.",
        "Any plans for a desktop app for {os}?",
        "Could the mobile app support editing branding settings? I do everything from my {device}.",
        "Can you add a role between Viewer and Accountant that can download exports but not create invoices?",
    ],
}

TICKET_OPENERS = ["Hi team. ", "Hello! ", "Hey there. ", "Good morning. "]
TICKET_CLOSERS = [" Thanks.", " Please advise.", " Thanks in advance.", " Any help appreciated."]

# --------------------------------------------------------------------------------------
# Handbook for continued pre-training: one paragraph per entry.
# --------------------------------------------------------------------------------------

HANDBOOK = [
    "Lumen Ledger is an invoicing and payments tool for freelancers, agencies and small businesses. This handbook is the internal reference for the support and product teams. When a customer question comes in, the answer should match what is written here, so that every reply, help article and release note tells the same story.",
    "Every customer works inside a workspace. A workspace holds the business details, the client cards, the Smart Invoices, the Ledger tab and the payout settings. A person can belong to more than one workspace, but invoices, clients and payouts never move between workspaces, and two workspaces cannot be merged.",
    "There are three plans. Starter is for one person and includes only the Owner. Growth adds up to 5 team members and custom branding. Scale has unlimited team members and priority support. All plans include Smart Invoices, recurring invoices, Autopay, the client portal, integrations and the mobile app.",
    "Plan changes are made by the Owner under Settings > Billing > Change plan. Upgrades take effect immediately and are charged as a prorated amount for the rest of the current billing period. Downgrades take effect at the end of the current billing period, and the workspace keeps its current features until then. Invoices and client cards are never removed by a plan change.",
    "Subscription refunds follow a simple rule. Annual plans can be refunded in full within 14 days of the charge. Monthly plans are not refunded, but the workspace keeps full access until the end of the period that was paid for. Receipts for every subscription charge are available as PDF files under Settings > Billing > Billing history.",
    "A client card stores everything we know about a customer's client: the business name, billing address, default currency, tax ID, reminder setting, Autopay status and the portal link. Most questions about a single client can be answered by opening their client card, so support replies should point there first.",
    "Smart Invoices are the heart of the product. To send one, the user opens Smart Invoices, clicks New, picks a client card, adds line items and clicks Send. The client receives an email with a link to the client portal, where they can view and pay the invoice. From an invoice, More > Resend sends the email again and Copy portal link gives a link to share by other means.",
    "Recurring invoices are Smart Invoices with Repeat turned on. The schedule can be weekly, monthly, quarterly or yearly, starting on a chosen date. Each copy is sent at 9:00 in the workspace time zone, not in the client's time zone. A recurring series can be paused, stopped or edited at any time from Smart Invoices with the Recurring filter, and edits apply only to invoices that have not been sent yet.",
    "Late-payment reminders are configured under Settings > Reminders. Up to 3 automatic reminders are sent, by default 3, 7 and 14 days after the due date, and the wording and timing can be changed. Reminders stop as soon as an invoice is marked paid. Reminders can be switched off for a single client on their client card, while everyone else keeps receiving them.",
    "Card and Autopay payments mark an invoice as paid automatically. Bank transfers do not, because we cannot see the customer's bank account, so the user has to open the invoice and click Record payment. The most common reason a client gets a reminder after paying is a bank transfer that was never recorded.",
    "Lumen Ledger supports more than 40 currencies. Each client card has a default currency, and every Smart Invoice is issued in exactly one currency. The workspace also has a base currency, set under Settings > Workspace, which can be changed only until the first invoice is sent.",
    "The Ledger tab reports everything in the workspace base currency. Payments in other currencies are converted at that day's exchange rate for reporting, while the invoice itself always stays in the currency the client was billed in. Small differences between report totals and invoice totals are expected when several currencies are used.",
    "Tax rates are managed under Settings > Taxes. A workspace can define rates such as VAT, GST or sales tax, and each line item on a Smart Invoice can carry up to 2 taxes. The workspace's own tax ID is entered under Settings > Taxes > Tax ID and prints on every invoice. A client's tax ID is stored on their client card.",
    "For business clients in the EU, the Reverse charge toggle on the client card adds the standard reverse charge note to invoices and removes VAT from them. Support should not give tax advice; if a customer asks which rate applies to them, we suggest they confirm with their accountant and then show them where to enter it.",
    "Invoice numbers are set under Settings > Invoices > Numbering, where the user chooses a prefix, such as INV-, and the next number. A number is assigned only when an invoice is sent, so drafts never use one up. Numbers of sent invoices can never be reused, even after an invoice is voided or credited. A gap in the sequence almost always means the next number was changed by hand.",
    "Sent invoices cannot be deleted. If an invoice was sent in error and nothing has been paid, it can be voided, and it stays in the records marked Void. If an amount needs to be reduced or reversed, especially after payment, the user creates a credit note from the invoice with More > Create credit note. Credit notes are linked to the original invoice and numbered with the CN- prefix.",
    "Partial payments are allowed per invoice. With Allow partial payments turned on, a client can pay part of the total in the client portal, optionally above a minimum amount. Manual partial payments are entered with Record payment. The invoice status shows Partially paid until the balance is cleared, and reminders continue for the remaining balance.",
    "The client portal is where clients view invoices, pay by card or bank transfer, download receipts and save a card for Autopay. Clients do not need a password. Each client card has a secure portal link, which the user can copy from the client card. Portal links expire after 30 days, and the client can request a fresh link from the portal sign-in screen.",
    "Autopay lets a client save a card in the client portal so that invoices are charged automatically on their due date. Only the client can add or change their card; our team and the user never type card details on a client's behalf. Autopay can be switched on or off for each client with the toggle on the client card.",
    "When an Autopay charge fails, we retry it 3 times over 5 days and email the client after each failure, asking them to update their card in the client portal. If the last retry fails, the invoice is marked Overdue, Autopay pauses for that client and the normal late-payment reminders take over. The decline reason is shown on the payment in the Ledger tab.",
    "Card payments carry a processing fee, which is shown on each payment in the Ledger tab. Bank transfers that the user records by hand have no processing fee. When a payment is refunded, the original processing fee is not returned.",
    "Refunds to clients are made from the Ledger tab: the user opens the payment, clicks Refund and chooses the full or a partial amount. Refunds take 5-10 business days to reach the client, depending on their bank. The payment shows the refund status and a refund reference the client can give to their bank if the money has not arrived after 10 business days.",
    "Money collected from clients is paid out to the workspace's bank account on the payout schedule. The schedule can be daily, weekly on a chosen weekday, or monthly on the 1st, and is changed under Settings > Payouts. Each payout takes 2 business days to arrive after it is sent; weekends and bank holidays do not count.",
    "The first payout for a new workspace is held for 7 days while we verify the bank details. This is the most common reason a new customer writes in about a missing payout, and the answer is simply that it is expected. After the first week, payouts follow the normal schedule.",
    "Every payout and its expected arrival date are listed under Ledger tab > Payouts. If a payout is more than 5 business days late, support asks for the payout date and traces it with our payments partner. We never ask customers to send bank statements or account details in chat.",
    "Clients receive a receipt by email automatically whenever a payment is recorded, whether it came by card, Autopay or a recorded bank transfer. A receipt can be sent again from the payment in the Ledger tab with Resend receipt, and clients can always download their receipts from the client portal.",
    "The Ledger tab is the financial record of the workspace: payments, refunds, payouts, fees and credit notes, all in the base currency. Export in the Ledger tab produces a CSV file for any date range. Exports over 10,000 rows are not downloaded directly; they are emailed to the email on the account, usually within 15 minutes. Client cards can be exported separately from Clients > Export.",
    "Integrations with QuickBooks, Xero and FreeAgent are available on every plan under Settings > Integrations. After the user clicks Connect and approves access, invoices, payments and client cards sync every hour. Sync now pushes changes immediately. Disconnecting and connecting again is safe and never deletes data on either side.",
    "Custom branding is available on Growth and Scale. Under Settings > Branding the user uploads a PNG or SVG logo of up to 2 MB and picks a brand color. Branding applies to Smart Invoices, invoice emails and the client portal. Invoices sent before the change keep their old look, and branding stops showing if the workspace moves down to Starter.",
    "Team members are invited under Settings > Team with Invite member. The inviter enters the person's email address and picks a role, and the invite link is valid for 7 days; expired invites can be sent again with Resend. Invite is greyed out when the workspace has reached the member limit of its plan.",
    "There are four roles. The Owner controls billing and is the only one who can cancel or delete the workspace. Admins can do everything except billing and deletion. Accountants can create invoices, record payments and export from the Ledger tab, but cannot change settings. Viewers have read-only access. Roles are changed with Change role next to a person's name under Settings > Team.",
    "A workspace has exactly one Owner. The Owner can hand over the workspace with Transfer ownership under Settings > Team. If the Owner has left the business and cannot transfer ownership, support can help after verifying the identity of another Admin, which takes up to 2 business days.",
    "Removing a team member under Settings > Team signs them out immediately. Their past activity stays in the Ledger tab so the audit trail is never broken. Support should encourage customers to remove former employees and contractors as soon as they leave.",
    "Two-factor authentication is turned on under Profile > Security > Two-factor authentication and works with any authenticator app. The user scans a QR code, enters a 6-digit code and receives 10 backup codes. Owners can require 2FA for everyone in the workspace under Settings > Team.",
    "A user who has lost their 2FA device can sign in with one of their backup codes by choosing Use a backup code on the sign-in page. If they have no backup codes, the workspace Owner can reset their 2FA under Settings > Team, or support can verify their identity, which takes up to 2 business days.",
    "Passwords are reset with Forgot password on the sign-in page. The reset link is sent to the email on the account and expires after 30 minutes. If the user no longer has access to that email, support verifies their identity, which takes up to 2 business days. Support never sends reset links by hand and never asks for a password.",
    "The Lumen Ledger mobile app is available for iOS and Android. It can create and send Smart Invoices, record payments, show the Ledger tab and send payment notifications. Branding, integrations and team settings are managed on the web only. If notifications stop, the user checks Profile > Notifications in the app and the notification settings of their device.",
    "A workspace is cancelled by the Owner under Settings > Billing > Cancel plan. After cancelling, the workspace stays read-only for 90 days: everything can still be viewed and exported, but new invoices and Autopay charges stop. Reactivate under Settings > Billing undoes the cancellation within those 90 days. After 90 days the workspace is permanently deleted.",
    "The Owner can delete a workspace immediately under Settings > Workspace > Delete workspace. Everything is permanently deleted within 30 days, and a confirmation is sent to the email on the account. For a single client, Delete client data on the client card removes their personal details; invoice records that must be kept by law are anonymized instead of deleted.",
    "Service status is published on the Lumen Ledger status page, linked in the footer of the sign-in page and in the Help menu. Scheduled maintenance is announced there 3 days ahead and usually happens early on Sunday morning UTC. During any downtime, Smart Invoices and Autopay charges are queued and go out automatically afterwards, so nothing is lost.",
    'Support replies are written by Pip in the house style: they open with "Hi there!", use our product terms, give short numbered steps when there is a procedure, stay under 90 words and sign off with "\u2014 Pip, Lumen Ledger Support".',
]

# --------------------------------------------------------------------------------------
# Templating helpers
# --------------------------------------------------------------------------------------

FORMATTER = string.Formatter()


def slot_names(template: str) -> list[str]:
    """Names of the {slots} used in a template, in order of appearance."""
    return [name for _, name, _, _ in FORMATTER.parse(template) if name]


def draw_slots(rng: random.Random) -> dict[str, str]:
    """One random value for every slot, drawn in a fixed order."""
    return {name: rng.choice(values) for name, values in SLOT_VALUES.items()}


def fill(template: str, values: dict[str, str], known: set[str] | None = None) -> str:
    """Fill a template; slots outside `known` get the neutral GENERIC wording."""
    names = slot_names(template)
    use = {n: values[n] if known is None or n in known else GENERIC[n] for n in names}
    return template.format(**use)


def render_answer(answer: str | list[str], values: dict[str, str], known: set[str]) -> str:
    """House-style answer: greeting, prose or numbered steps, signature."""
    if isinstance(answer, str):
        body = fill(answer, values, known)
    else:
        lead, *steps = answer
        lines = [fill(lead, values, known)]
        lines += [f"{i}) {fill(step, values, known)}" for i, step in enumerate(steps, 1)]
        body = "\n".join(lines)
    return GREETING + body + SIGNATURE


# --------------------------------------------------------------------------------------
# Prompt drawing: each topic has a shuffled deck of its asks so phrasings rotate before
# they repeat, and every user message is unique across the chat and preference files.
# --------------------------------------------------------------------------------------


class AskDeck:
    """Cycles through a topic's (intent, ask) pairs in a seeded, reshuffled order."""

    def __init__(self, topic: dict, rng: random.Random):
        self.topic = topic
        self.rng = rng
        self.pairs = [(i, a) for i, intent in enumerate(topic["intents"]) for a in intent["asks"]]
        self.queue: list[tuple[int, str]] = []

    def next_pair(self) -> tuple[int, str]:
        if not self.queue:
            self.queue = self.pairs[:]
            self.rng.shuffle(self.queue)
        return self.queue.pop()

    def draw(self, used: set[str]) -> tuple[dict, str, dict[str, str]]:
        """Return (intent, user text, slot values) for a user message not used before."""
        for _ in range(len(self.pairs) * 2):
            intent_idx, ask = self.next_pair()
            for _ in range(12):
                values = draw_slots(self.rng)
                text = fill(ask, values)
                if text not in used:
                    used.add(text)
                    return self.topic["intents"][intent_idx], ask, values
        raise RuntimeError(f"ran out of unique prompts for {self.topic['title']}")


def answer_for(intent: dict, ask: str, values: dict[str, str]) -> str:
    return render_answer(intent["answer"], values, set(slot_names(ask)))


def msg(role: str, content: str, **extra) -> dict:
    return {"role": role, "content": content, **extra}


# --------------------------------------------------------------------------------------
# support_chat.jsonl
# --------------------------------------------------------------------------------------


def single_turn(deck: AskDeck, used: set[str]) -> dict:
    intent, ask, values = deck.draw(used)
    return {
        "messages": [
            msg("system", SUPPORT_SYSTEM),
            msg("user", fill(ask, values)),
            msg("assistant", answer_for(intent, ask, values)),
        ]
    }


def follow_up(rng: random.Random, deck: AskDeck, first_intent: dict, values: dict[str, str]):
    """Either ask for clarification of the same intent or ask about another intent."""
    if rng.random() < 0.5:
        return rng.choice(CLARIFY_FOLLOW_UPS), first_intent, None
    others = [i for i in deck.topic["intents"] if i is not first_intent]
    intent = rng.choice(others)
    ask = rng.choice(intent["asks"])
    return rng.choice(NEXT_CONNECTORS) + fill(ask, values), intent, ask


def multi_turn(rng: random.Random, deck: AskDeck, used: set[str]) -> dict:
    intent, ask, values = deck.draw(used)
    old = rng.choice(OLD_REPLIES).format(title=deck.topic["title"])
    question, final_intent, final_ask = follow_up(rng, deck, intent, values)
    final = answer_for(final_intent, final_ask or ask, values)
    return {
        "messages": [
            msg("system", SUPPORT_SYSTEM),
            msg("user", fill(ask, values)),
            msg("assistant", old, weight=0),
            msg("user", question),
            msg("assistant", final),
        ]
    }


def spread(rng: random.Random, n: int) -> list[int]:
    """Topic index for each of n examples, as even as possible, in shuffled order."""
    order = [i % len(TOPICS) for i in range(n)]
    rng.shuffle(order)
    return order


def build_support_chat(rng: random.Random, decks: list[AskDeck], used: set[str]) -> list[dict]:
    topic_order = spread(rng, N_CHAT)
    multi = set(rng.sample(range(N_CHAT), N_MULTI_TURN))
    rows = []
    for pos, topic_idx in enumerate(topic_order):
        deck = decks[topic_idx]
        rows.append(multi_turn(rng, deck, used) if pos in multi else single_turn(deck, used))
    return rows


# --------------------------------------------------------------------------------------
# support_preferences.jsonl
# --------------------------------------------------------------------------------------


def worse_answer(rng: random.Random, style: str, intent: dict, title: str) -> str:
    parts = {"title": title, "gist": intent["gist"]}
    if style == "rambling":
        pieces = [
            rng.choice(RAMBLING_OPENERS),
            rng.choice(RAMBLING_MIDDLES),
            intent["gist"],
            rng.choice(RAMBLING_TAILS),
        ]
        return " ".join(pieces).format(**parts)
    templates = OFF_BRAND_TEMPLATES if style == "off_brand" else CURT_TEMPLATES
    return rng.choice(templates).format(**parts)


def preference_pair(rng: random.Random, deck: AskDeck, used: set[str], style: str) -> dict:
    intent, ask, values = deck.draw(used)
    return {
        "input": {"messages": [msg("system", SUPPORT_SYSTEM), msg("user", fill(ask, values))]},
        "preferred_output": [msg("assistant", answer_for(intent, ask, values))],
        "non_preferred_output": [msg("assistant", worse_answer(rng, style, intent, deck.topic["title"]))],
    }


def build_preferences(rng: random.Random, decks: list[AskDeck], used: set[str]) -> list[dict]:
    styles = ["rambling", "off_brand", "curt"] * (N_PREFERENCES // 3)
    rng.shuffle(styles)
    topic_order = spread(rng, N_PREFERENCES)
    return [preference_pair(rng, decks[t], used, s) for t, s in zip(topic_order, styles)]


# --------------------------------------------------------------------------------------
# ticket_classifier.jsonl
# --------------------------------------------------------------------------------------


def decorate(rng: random.Random, text: str) -> str:
    """Optionally add a greeting before or a sign-off after the ticket (never both)."""
    mode = rng.choice(["plain", "plain", "opener", "closer"])
    if mode == "opener":
        return rng.choice(TICKET_OPENERS) + text
    if mode == "closer":
        return text + rng.choice(TICKET_CLOSERS)
    return text


def draw_ticket(rng: random.Random, template: str, used: set[str]) -> str | None:
    for _ in range(30):
        text = decorate(rng, fill(template, draw_slots(rng)))
        if text not in used:
            used.add(text)
            return text
    return None


def tickets_for(rng: random.Random, label: str, count: int, used: set[str]) -> list[str]:
    templates = TICKET_TEMPLATES[label]
    tickets, queue = [], []
    while len(tickets) < count:
        if not queue:
            queue = templates[:]
            rng.shuffle(queue)
        text = draw_ticket(rng, queue.pop(), used)
        if text is not None:
            tickets.append(text)
    return tickets


def build_tickets(rng: random.Random) -> list[dict]:
    used: set[str] = set()
    pairs = [(t, label) for label, n in LABEL_COUNTS.items() for t in tickets_for(rng, label, n, used)]
    rng.shuffle(pairs)
    return [
        {"messages": [msg("system", CLASSIFIER_SYSTEM), msg("user", t), msg("assistant", label)]} for t, label in pairs
    ]


# --------------------------------------------------------------------------------------
# Validation: the generator refuses to write data that breaks the dataset rules.
# --------------------------------------------------------------------------------------

FORBIDDEN_CHARS = {"\u2018", "\u2019", "\u201c", "\u201d", "\u00a0", "\t", "@"}
ALLOWED_NON_ASCII = {"\u2014"}  # only the em dash in Pip's signature
PII_PATTERNS = [
    re.compile(r"\d[\d \-().]{6,}\d"),  # phone-like or long digit runs
    re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"),  # IPv4 addresses
    re.compile(r"\b[A-Z]{2}\d{2}[A-Z0-9]{10,}\b"),  # IBAN-like strings
    re.compile(r"\bsk-[A-Za-z0-9]"),  # API-key-like prefixes
    re.compile(r"[A-Za-z0-9_\-]{32,}"),  # long random-looking tokens
]


def check_text(text: str, where: str) -> None:
    bad = FORBIDDEN_CHARS.intersection(text)
    odd = {c for c in text if ord(c) > 127 and c not in ALLOWED_NON_ASCII}
    assert not bad and not odd, f"{where}: forbidden characters {bad | odd!r}"
    assert all(line == line.rstrip() for line in text.split("\n")), f"{where}: trailing whitespace"
    assert text == text.strip() and text, f"{where}: empty or padded text"
    letters = [c for c in text if c.isalpha()]
    upper = sum(c.isupper() for c in letters)
    assert upper * 2 < len(letters), f"{where}: mostly uppercase"
    for pattern in PII_PATTERNS:
        assert not pattern.search(text), f"{where}: looks like personal data: {text!r}"


def check_house_style(text: str, where: str) -> None:
    assert text.startswith(GREETING) and text.endswith(SIGNATURE), f"{where}: not house style"
    assert len(text.split()) <= MAX_ANSWER_WORDS, f"{where}: {len(text.split())} words"


def iter_messages(row: dict):
    if "messages" in row:
        yield from row["messages"]
    else:
        yield from row["input"]["messages"]
        yield from row["preferred_output"]
        yield from row["non_preferred_output"]


def validate_rows(name: str, rows: list[dict], expected: int) -> None:
    assert len(rows) == expected, f"{name}: {len(rows)} rows, expected {expected}"
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    assert len(set(lines)) == len(lines), f"{name}: duplicate rows"
    for n, row in enumerate(rows, 1):
        for m in iter_messages(row):
            check_text(m["content"], f"{name}:{n}")


def validate_support_chat(rows: list[dict]) -> None:
    for n, row in enumerate(rows, 1):
        final = row["messages"][-1]
        assert final["role"] == "assistant" and "weight" not in final
        check_house_style(final["content"], f"support_chat:{n}")


def validate_preferences(rows: list[dict]) -> None:
    for n, row in enumerate(rows, 1):
        check_house_style(row["preferred_output"][0]["content"], f"preferences:{n}")
        worse = row["non_preferred_output"][0]["content"]
        assert not worse.startswith("Hi there") and "Pip" not in worse, f"preferences:{n}"


def validate_handbook(paragraphs: list[str]) -> None:
    assert 38 <= len(paragraphs) <= 42, f"handbook has {len(paragraphs)} paragraphs"
    assert len(set(paragraphs)) == len(paragraphs), "duplicate handbook paragraphs"
    for n, para in enumerate(paragraphs, 1):
        assert "\n" not in para, f"handbook:{n}: paragraph spans lines"
        check_text(para, f"handbook:{n}")


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_handbook(path: Path, paragraphs: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write("\n\n".join(paragraphs) + "\n")


def main() -> None:
    rng = random.Random(SEED)
    decks = [AskDeck(topic, rng) for topic in TOPICS]
    used_prompts: set[str] = set()

    chat = build_support_chat(rng, decks, used_prompts)
    prefs = build_preferences(rng, decks, used_prompts)
    tickets = build_tickets(rng)

    validate_rows("support_chat", chat, N_CHAT)
    validate_support_chat(chat)
    validate_rows("support_preferences", prefs, N_PREFERENCES)
    validate_preferences(prefs)
    validate_rows("ticket_classifier", tickets, sum(LABEL_COUNTS.values()))
    validate_handbook(HANDBOOK)

    write_jsonl(OUT_DIR / "support_chat.jsonl", chat)
    write_jsonl(OUT_DIR / "ticket_classifier.jsonl", tickets)
    write_jsonl(OUT_DIR / "support_preferences.jsonl", prefs)
    write_handbook(OUT_DIR / "ledger_handbook.txt", HANDBOOK)
    print(
        f"wrote {len(chat)} chat, {len(tickets)} ticket, {len(prefs)} preference rows "
        f"and {len(HANDBOOK)} handbook paragraphs to {OUT_DIR}"
    )


if __name__ == "__main__":
    main()
