"""The three tasks of `benchmarks/outcome.py`, generated deterministically (seeded) from tables.

Each generator returns `n` distinct chat examples in OpenAI format ({"messages": [...]}), built
from templates x slot values, so `tuneforge data prepare`'s exact-duplicate removal keeps them all.
Every fictional name is new here: nothing comes from the Lumen Ledger examples, the evaluation's
probe sets or the replay prompts.

1. classification: short messages to "Spokewise", a city bike-share app, each mapped to one of six
   labels (the label is the whole answer).
2. short_answers: questions about "Larkspur Libraries", six branches lending seven kinds of items.
   The answer to each question is one cell of a fact table (an item's late fee, loan period or
   renewals; a branch's hours on a day; the floor of a section at a branch) and the other slots are
   wording around it, so a random split leaves test questions that ask known facts in new
   combinations (`fact_cells` lets the benchmark check that every test fact was trained on).
3. long_chat: support replies from "Wren" at Brightwell Appliances in a house style: a greeting,
   a sentence naming the product and problem, numbered steps, a line on what to do if that fails,
   and a sign-off. The reply is fixed per (product, problem); the customer's wording varies.

Run alone to write the files: `python -m benchmarks.outcome_tasks OUT_DIR [N]`.
"""

import itertools
import json
import random
import sys
from pathlib import Path

SEED = 20261202

# ------------------------------------------------------------------------------ 1. classification
CLASSIFIER_SYSTEM = (
    "You sort messages sent to Spokewise, a city bike-share app. Answer with one label only: "
    "unlock_problem, billing, damage_report, find_dock, membership, lost_property."
)
DOCKS = [
    "Canal Basin",
    "Fig Tree Square",
    "Old Tannery",
    "Millbrook Station",
    "Larch Avenue",
    "Quayside",
    "Tinsmith Row",
    "Heron Park",
    "Clocktower",
    "Saltworks Lane",
    "Bramble Court",
    "Pier 4",
]
BIKES = [f"SW-{n}" for n in (1043, 2218, 3307, 4120, 5096, 6381, 7254, 8019)]
PARTS = ["brake", "chain", "bell", "front light", "seat", "basket", "kickstand", "back tyre"]
ITEMS = ["phone", "keys", "wallet", "water bottle", "sunglasses", "backpack", "helmet", "scarf"]
WHEN = ["this morning", "yesterday", "last night", "an hour ago", "on Sunday"]
AMOUNTS = ["$1.50", "$3", "$4.25", "$6", "$9.80", "$12"]
PASSES = ["Day Pass", "Monthly Ride", "Annual Ride", "Student Ride"]
INTENTS = {
    "unlock_problem": [
        "bike {bike} won't unlock at {dock}",
        "I scanned the QR code on {bike} but the lock stays shut",
        "the app says unlocked but {bike} is still stuck in the dock at {dock}",
        "can't get a bike out of {dock}, the light just blinks red",
        "unlock button does nothing at {dock}",
        "stuck at {dock}, every bike I try refuses to release",
        "{bike} beeps three times and won't come out of the dock",
        "my ride never started, the lock on {bike} didn't open",
    ],
    "billing": [
        "I was charged {amount} twice for one ride {when}",
        "why did you take {amount} from my card {when}?",
        "refund please, the ride {when} cost {amount} but I only rode 5 minutes",
        "my receipt says {amount} but the app showed a lower price",
        "there's a {amount} charge I don't recognise",
        "the ride from {dock} {when} was billed as two rides",
        "how do I get my money back for {amount} charged {when}",
        "charged an overtime fee of {amount} even though I docked on time",
    ],
    "damage_report": [
        "the {part} on {bike} is broken",
        "{bike} has a loose {part}, someone should fix it",
        "reporting a bike at {dock} with a bent {part}",
        "the {part} fell off while I was riding {bike} {when}",
        "{bike} is not safe, the {part} doesn't work",
        "damaged bike at {dock}: the {part} is snapped",
        "just rode {bike} and the {part} is wobbling badly",
        "someone wrecked the {part} on a bike at {dock}",
    ],
    "find_dock": [
        "where is the nearest dock to {dock}?",
        "is there a dock with free spaces near {dock}",
        "the dock at {dock} is full, where else can I leave the bike",
        "which docks near {dock} have bikes right now",
        "can't find the {dock} dock on the map",
        "how far is the next station after {dock}",
        "is the {dock} dock still open or was it moved",
        "where can I park near {dock}, all spots are taken",
    ],
    "membership": [
        "how do I switch from {pass_a} to {pass_b}?",
        "I want to cancel my {pass_a}",
        "does the {pass_a} include e-bikes?",
        "can I pause my {pass_a} while I'm away",
        "when does my {pass_a} renew?",
        "is {pass_b} cheaper than {pass_a} if I ride daily",
        "upgrade me to {pass_b} please",
        "what do I get with a {pass_b}",
    ],
    "lost_property": [
        "I left my {item} in the basket of {bike}",
        "lost my {item} at {dock} {when}",
        "did anyone hand in a {item} near {dock}?",
        "forgot my {item} on a bike {when}, how do I get it back",
        "I think my {item} fell out while riding {bike}",
        "is there a lost and found for things left at {dock}",
        "my {item} was in the basket when I docked at {dock} {when}",
        "found out my {item} is missing after my ride {when}",
    ],
}
OPENERS = ["", "hi, ", "Hello! ", "hey ", "Quick one: ", "Help - "]
CLOSERS = ["", " thanks", "?", " pls", " asap", "!"]


def _fill(template: str, rng: random.Random) -> str:
    pass_a, pass_b = rng.sample(PASSES, 2)
    return template.format(
        dock=rng.choice(DOCKS),
        bike=rng.choice(BIKES),
        part=rng.choice(PARTS),
        item=rng.choice(ITEMS),
        when=rng.choice(WHEN),
        amount=rng.choice(AMOUNTS),
        pass_a=pass_a,
        pass_b=pass_b,
    )


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def classification(n: int = 1500, seed: int = SEED) -> list[dict]:
    """`n` distinct messages, as evenly over the labels as `n` allows."""
    rng = random.Random(seed)
    per_label = {label: n // len(INTENTS) + (i < n % len(INTENTS)) for i, label in enumerate(INTENTS)}
    records, seen = [], set()
    for label, templates in INTENTS.items():
        made = 0
        while made < per_label[label]:
            text = _fill(rng.choice(templates), rng)
            opener = rng.choice(OPENERS)
            text = opener + (text if opener.endswith(", ") or opener in ("", "hey ") else _capitalised(text))
            text = (text.lower() if rng.random() < 0.3 else text) + rng.choice(CLOSERS)
            if text in seen:
                continue
            seen.add(text)
            made += 1
            records.append(
                {
                    "messages": [
                        {"role": "system", "content": CLASSIFIER_SYSTEM},
                        {"role": "user", "content": text},
                        {"role": "assistant", "content": label},
                    ]
                }
            )
    rng.shuffle(records)
    return records


# ------------------------------------------------------------------------------ 2. short answers
LIBRARY_SYSTEM = "You are the Larkspur Libraries help desk. Answer in one short line."
BRANCHES = ["Maple Street", "Harbor View", "Old Mill", "Cedar Hill", "Riverside", "Northgate"]
# item: (late fee, loan period, renewals)
LOANS = {
    "kids' book": ("$0.10 a day.", "4 weeks.", "Three times."),
    "adult book": ("$0.25 a day.", "3 weeks.", "Twice."),
    "DVD": ("$1 a day.", "1 week.", "Once."),
    "audiobook": ("$0.50 a day.", "2 weeks.", "Twice."),
    "magazine": ("No late fee.", "1 week.", "No renewals."),
    "board game": ("$2 a day.", "2 weeks.", "Once."),
    "laptop": ("$5 a day.", "3 days.", "No renewals."),
}
# branch: (Monday-Friday, Saturday, Sunday)
HOURS = {
    "Maple Street": ("9 am to 8 pm.", "10 am to 5 pm.", "Closed on Sundays."),
    "Harbor View": ("10 am to 6 pm.", "10 am to 4 pm.", "Noon to 4 pm."),
    "Old Mill": ("8 am to 6 pm.", "9 am to 1 pm.", "Closed on Sundays."),
    "Cedar Hill": ("9 am to 9 pm.", "9 am to 6 pm.", "11 am to 5 pm."),
    "Riverside": ("11 am to 7 pm.", "10 am to 2 pm.", "Closed on Sundays."),
    "Northgate": ("7 am to 7 pm.", "8 am to 4 pm.", "10 am to 2 pm."),
}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
SECTIONS = ["children's room", "teen zone", "quiet study room", "maker space"]
FLOORS = {  # branch: the floor of each section, in SECTIONS' order
    "Maple Street": ("The ground floor.", "The first floor.", "The second floor.", "The basement."),
    "Harbor View": ("The first floor.", "The ground floor.", "The second floor.", "There isn't one."),
    "Old Mill": ("The ground floor.", "The ground floor.", "The first floor.", "The first floor."),
    "Cedar Hill": ("The second floor.", "The first floor.", "The third floor.", "The ground floor."),
    "Riverside": ("The ground floor.", "The first floor.", "There isn't one.", "There isn't one."),
    "Northgate": ("The first floor.", "The second floor.", "The ground floor.", "The basement."),
}
AT_BRANCH = ["at the {branch} branch", "at {branch}", "from the {branch} library"]
ASKS = {
    "fee": [
        "What's the late fee for a {item} {at}?",
        "How much do I pay per day if a {item} I borrowed {at} is overdue?",
        "{item} overdue, borrowed {at} - what's the fine?",
        "late fee on a {item}? got it {at}",
        "If I bring a {item} back late, how much is it? I borrowed it {at}",
        "What do you charge for an overdue {item} {at}?",
    ],
    "loan": [
        "How long can I keep a {item} I borrowed {at}?",
        "What's the loan period for a {item} {at}?",
        "how many days do I get with a {item} {at}",
        "When is a {item} due back if I take it out {at}?",
        "loan time for a {item} {at}?",
        "For how long can I borrow a {item} {at}?",
    ],
    "renew": [
        "How many times can I renew a {item} I got {at}?",
        "Can I renew a {item} {at}? How often?",
        "renewals allowed on a {item} {at}?",
        "How often can a {item} borrowed {at} be renewed?",
        "is there a renewal limit for a {item} {at}",
        "How many renewals do I get for a {item} {at}?",
    ],
    "hours": [
        "What are the {branch} branch's hours on {day}?",
        "When is the {branch} library open on {day}?",
        "{branch} opening hours on a {day}?",
        "is {branch} open on {day}, and when",
        "What time does the {branch} branch open and close on {day}?",
        "hours at {branch} this {day}?",
        "Planning a visit to {branch} on {day} - when are you open?",
        "Can I come to {branch} on {day}? What are the hours?",
        "{day} hours for the {branch} branch, please",
        "until when is {branch} open on {day}",
    ],
    "floor": [
        "Which floor is the {section} on at {branch}?",
        "Where do I find the {section} in the {branch} branch?",
        "what floor is the {branch} {section}",
        "Is the {section} at {branch} upstairs?",
        "How do I get to the {section} at the {branch} library?",
        "{section} at {branch} - which floor?",
        "On which floor of the {branch} branch is the {section}?",
        "where's the {section} in {branch}",
        "Looking for the {section} at {branch}, what floor is it on?",
        "I'm at {branch}. Where is the {section}?",
    ],
}
QUESTION_OPENERS = ["", "Hi! ", "Quick question: "]
# The share of the questions each kind of fact gets (the floors have the fewest distinct wordings).
KIND_SHARES = {"fee": 0.25, "loan": 0.2, "renew": 0.2, "hours": 0.2, "floor": 0.15}


def _question_pool() -> dict[str, list[tuple[str, str, tuple]]]:
    """Per kind of fact, every (question, answer, fact cell) the tables and templates make; the cell
    is what the answer depends on."""
    pool = {kind: [] for kind in KIND_SHARES}
    for column, kind in enumerate(("fee", "loan", "renew")):
        for template, (item, facts), at, branch in itertools.product(ASKS[kind], LOANS.items(), AT_BRANCH, BRANCHES):
            question = template.format(item=item, at=at.format(branch=branch))
            pool[kind].append((question, facts[column], (kind, item)))
    for template, branch, day in itertools.product(ASKS["hours"], BRANCHES, DAYS):
        column = 0 if day not in ("Saturday", "Sunday") else DAYS.index(day) - 4
        pool["hours"].append(
            (template.format(branch=branch, day=day), HOURS[branch][column], ("hours", branch, column))
        )
    for template, branch, (index, section) in itertools.product(ASKS["floor"], BRANCHES, enumerate(SECTIONS)):
        question = template.format(branch=branch, section=section)
        pool["floor"].append((question, FLOORS[branch][index], ("floor", branch, index)))
    return pool


def _greeted(opener: str, question: str) -> str:
    return opener + _capitalised(question) if opener else question


def short_answers(n: int = 1500, seed: int = SEED) -> list[dict]:
    """`n` distinct questions (each wording once; a greeting added to some), shared between the kinds
    of fact by KIND_SHARES."""
    rng = random.Random(seed + 1)
    pool = _question_pool()
    quotas = {kind: int(n * share) for kind, share in KIND_SHARES.items()}
    quotas["fee"] += n - sum(quotas.values())
    chosen = []
    for kind, quota in quotas.items():
        if quota > len(pool[kind]):
            raise ValueError(f"short_answers: only {len(pool[kind])} distinct {kind} questions, asked for {quota}")
        for question, answer, _ in rng.sample(pool[kind], quota):
            chosen.append((_greeted(rng.choice(QUESTION_OPENERS), question), answer))
    rng.shuffle(chosen)
    return [
        {
            "messages": [
                {"role": "system", "content": LIBRARY_SYSTEM},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        }
        for question, answer in chosen
    ]


def fact_cells() -> dict[str, tuple]:
    """Question text (as generated, any greeting) -> the fact cell its answer comes from."""
    return {
        _greeted(opener, question): cell
        for questions in _question_pool().values()
        for question, _, cell in questions
        for opener in QUESTION_OPENERS
    }


# ------------------------------------------------------------------------------ 3. long chat
SUPPORT_SYSTEM = "You are Wren, the support assistant for Brightwell Appliances."
SIGN_OFF = "Warm regards,\nWren, Brightwell Support"
# product: {problem: (how the customer says it, [steps])}
PROCEDURES = {
    "Aurora kettle": {
        "doesn't switch off": (
            ["keeps boiling and won't switch itself off", "doesn't click off when the water boils"],
            [
                "Unplug the kettle and let it cool for ten minutes.",
                "Check that the lid is pressed down until it clicks; an open lid stops the steam sensor.",
                "Wipe the steam vent at the back of the handle with a dry cloth.",
                "Boil a half-full kettle and watch for the click.",
            ],
        ),
        "limescale": (
            ["has white flakes floating in the water", "is full of limescale"],
            [
                "Fill the kettle halfway with equal parts water and white vinegar.",
                "Boil it once, then leave it to stand for an hour.",
                "Empty it, rinse it three times and boil fresh water once before use.",
            ],
        ),
        "leaks": (
            ["leaks onto the counter", "drips from underneath when it's full"],
            [
                "Unplug the kettle and empty it.",
                "Check that the water is below the MAX line; overfilling spills through the spout seal.",
                "Look at the base for cracks and dry the power plate completely.",
                "Refill to the MAX line and stand it on a dry towel for five minutes.",
            ],
        ),
    },
    "Toastmaster 4 toaster": {
        "lever won't stay down": (
            ["lever pops straight back up", "won't stay down when I press the lever"],
            [
                "Check that the toaster is plugged in and switched on at the wall; the lever only locks with power.",
                "Unplug it and empty the crumb tray at the bottom.",
                "Plug it back in and press the lever down firmly in one smooth push.",
            ],
        ),
        "burns one side": (
            ["burns the bread on one side only", "toasts unevenly, one side is black"],
            [
                "Set the browning dial to 3 and try one slice in each slot.",
                "Empty the crumb tray; crumbs on one side block the heat.",
                "Use the centring guides by toasting slices no thicker than 2.5 cm.",
            ],
        ),
        "smells of burning": (
            ["smells of burning even with nothing in it", "gives off a burning smell"],
            [
                "Unplug the toaster and let it cool completely.",
                "Remove and empty the crumb tray, then wash it in warm soapy water.",
                "Turn the toaster upside down over the sink and tap it gently to shake out loose crumbs.",
                "Run it empty on setting 2 for one cycle in a ventilated room.",
            ],
        ),
    },
    "Cascade dishwasher": {
        "won't drain": (
            ["leaves dirty water in the bottom", "won't drain at the end of the cycle"],
            [
                "Switch the dishwasher off and take out the lower basket.",
                "Twist out the filter at the bottom and rinse it under the tap.",
                "Check the drain hose behind the machine for kinks.",
                "Refit the filter until it clicks and run a rinse cycle.",
            ],
        ),
        "dishes stay dirty": (
            ["leaves the dishes dirty", "doesn't clean the plates properly any more"],
            [
                "Clean the filter at the bottom of the tub under running water.",
                "Spin the spray arms by hand and clear any blocked holes with a toothpick.",
                "Load plates facing the centre and keep tall items away from the spray arms.",
                "Use the Intensive programme for heavily soiled loads.",
            ],
        ),
        "error E4": (
            ["shows error E4", "flashes E4 and stops"],
            [
                "Turn the water tap under the sink fully on.",
                "Switch the dishwasher off at the wall for one minute.",
                "Check that the inlet hose is not bent behind the machine.",
                "Switch it back on and restart the programme.",
            ],
        ),
    },
    "Tempo washing machine": {
        "door won't open": (
            ["door is locked and won't open", "won't let me open the door after the wash"],
            [
                "Wait three minutes after the programme ends; the lock releases by itself.",
                "If water is still inside, run the Drain and Spin programme.",
                "Switch the machine off and on again, then wait another two minutes.",
            ],
        ),
        "shakes when spinning": (
            ["shakes and bangs when it spins", "moves across the floor during the spin"],
            [
                "Check that the four transit bolts on the back were removed after delivery.",
                "Level the machine by turning its feet until it no longer rocks.",
                "Spread heavy items such as towels evenly in the drum before the spin.",
            ],
        ),
        "smells musty": (
            ["smells musty inside the drum", "makes the clothes smell damp"],
            [
                "Run an empty 90 degree wash with half a cup of white vinegar.",
                "Wipe the rubber door seal and clean the detergent drawer.",
                "Leave the door and the drawer open between washes so the drum dries.",
            ],
        ),
    },
    "Breeze tower fan": {
        "won't oscillate": (
            ["doesn't turn from side to side any more", "has stopped oscillating"],
            [
                "Press the oscillation button on the top panel or the remote; its light should come on.",
                "Unplug the fan and check that nothing blocks the base from turning.",
                "Plug it back in and turn oscillation on at speed 2.",
            ],
        ),
        "remote doesn't work": (
            ["ignores the remote control", "doesn't respond to the remote"],
            [
                "Replace the remote's battery with a new CR2025.",
                "Point the remote at the display panel from within five metres.",
                "Wipe the small window on the display panel with a dry cloth.",
            ],
        ),
        "rattles": (
            ["rattles at high speed", "makes a rattling noise"],
            [
                "Unplug the fan and stand it on a flat, hard floor.",
                "Tighten the screws that hold the base together.",
                "Vacuum the air intake on the back to remove dust.",
                "Run it at speed 1, then speed 3, and listen for the rattle.",
            ],
        ),
    },
    "Frostline fridge": {
        "not cold enough": (
            ["isn't keeping things cold", "feels warm inside"],
            [
                "Set the thermostat dial to 4.",
                "Keep the vents at the back of the shelves clear of food.",
                "Check the door seal by closing the door on a sheet of paper; it should not slide out.",
                "Wait 24 hours for the temperature to settle.",
            ],
        ),
        "water under the drawers": (
            ["has water pooling under the salad drawers", "collects water at the bottom"],
            [
                "Find the drain hole at the back of the fridge, above the salad drawers.",
                "Clear it gently with the cleaning tool in the door shelf, or a cotton bud.",
                "Pour a little warm water into the hole to check that it drains.",
            ],
        ),
        "humming loudly": (
            ["hums very loudly", "makes a loud buzzing noise"],
            [
                "Leave at least 5 cm between the back of the fridge and the wall.",
                "Level the fridge by turning its front feet.",
                "Make sure nothing on top of the fridge or behind it touches the casing.",
            ],
        ),
    },
}
AGES = ["two months", "a year", "three years", "six weeks", "eight months"]
CUSTOMER_OPENERS = ["", "Hi, ", "Hello there. ", "Help! ", "Good morning. "]
CUSTOMER_CONTEXT = ["", " It's about {age} old.", " I bought it {age} ago.", " This started yesterday."]
CUSTOMER_CLOSERS = ["", " What should I do?", " Any ideas?", " Thanks in advance.", " Can you help?"]


def support_reply(product: str, problem: str) -> str:
    """The house-style reply for one product's problem."""
    _, steps = PROCEDURES[product][problem]
    numbered = "\n".join(f"{i}. {step}" for i, step in enumerate(steps, start=1))
    return (
        f"Hi there, and thanks for contacting Brightwell! I'm sorry your {product} is giving you trouble. "
        f"Here's what usually fixes it:\n\n{numbered}\n\n"
        "If that doesn't help, reply with the serial number from the label underneath and we'll arrange a "
        f"repair under your warranty.\n\n{SIGN_OFF}"
    )


def long_chat(n: int = 300, seed: int = SEED) -> list[dict]:
    """`n` distinct customer messages, spread evenly over the (product, problem) pairs."""
    rng = random.Random(seed + 2)
    cells = [(product, problem) for product, problems in PROCEDURES.items() for problem in problems]
    pools = {}
    for product, problem in cells:
        sayings, _ = PROCEDURES[product][problem]
        messages = set()
        for saying, opener, context, closer, age in itertools.product(
            sayings, CUSTOMER_OPENERS, CUSTOMER_CONTEXT, CUSTOMER_CLOSERS, AGES
        ):
            my = "my" if opener.endswith(", ") else "My"
            messages.add(f"{opener}{my} {product} {saying}.{context.format(age=age)}{closer}")
        pools[(product, problem)] = sorted(messages)
        rng.shuffle(pools[(product, problem)])
    if n > sum(map(len, pools.values())):
        raise ValueError(f"long_chat: at most {sum(map(len, pools.values()))} distinct examples")
    records = []
    for i in range(n):
        product, problem = cells[i % len(cells)]
        records.append(
            {
                "messages": [
                    {"role": "system", "content": SUPPORT_SYSTEM},
                    {"role": "user", "content": pools[(product, problem)][i // len(cells)]},
                    {"role": "assistant", "content": support_reply(product, problem)},
                ]
            }
        )
    rng.shuffle(records)
    return records


# ------------------------------------------------------------------------------ files
GENERATORS = {"classification": classification, "short_answers": short_answers, "long_chat": long_chat}
DEFAULT_EXAMPLES = {"classification": 1500, "short_answers": 1500, "long_chat": 300}


def write_task(name: str, n: int, path: Path) -> Path:
    """Write task `name`'s `n` examples to `path` (JSON lines)."""
    records = GENERATORS[name](n)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1])
    scale = int(sys.argv[2]) if len(sys.argv) > 2 else None
    for task, default in DEFAULT_EXAMPLES.items():
        count = default if scale is None else (scale if task != "long_chat" else max(20, scale // 5))
        print(write_task(task, count, out / f"{task}.jsonl"))
