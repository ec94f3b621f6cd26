#!/usr/bin/env python3
"""Writes fixtures/eval/captions/captions.json: captions, pycocoevalcap's tokenisation and scores.

Run from the repository root with a venv built from scripts/eval/requirements.txt (pycocoevalcap 1.2)
and Java on PATH (pycocoevalcap's PTBTokenizer and METEOR are Java programs):

    python3 -m venv /tmp/evalvenv && /tmp/evalvenv/bin/pip install -r scripts/eval/requirements.txt
    /tmp/evalvenv/bin/python scripts/eval/make_caption_metric_fixtures.py

The scores are computed exactly as pycocoevalcap's COCOEvalCap.evaluate does (tokenise references and
candidates as two sets, then Bleu(4), Meteor, Rouge, Cider), without SPICE.
"""
import json
import os

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

# (candidate, five references) per image: varied, realistic captions with punctuation, contractions,
# numbers, hyphens, repeated words, brackets, quotes, an almost empty candidate and a perfect match.
IMAGES = [
    ("A man riding a bike down the street.", ["A man rides his bicycle down a city street.", "A cyclist pedals along the road.", "Man on a bike in traffic.", "A person riding a bicycle on a busy street.", "A man is riding a bike down the street."]),
    ("a dog that's catching a frisbee in the park", ["A dog jumps to catch a Frisbee.", "The brown dog is catching a frisbee in a park.", "A dog leaping for a flying disc on the grass.", "Dog catching frisbee mid-air.", "A dog's playing frisbee in the park."]),
    ("Two children playing soccer on a field", ["Two kids are playing soccer on a grassy field.", "Children chasing a soccer ball.", "Two young boys kick a ball around a field.", "A pair of children play football outside.", "Kids playing soccer."]),
    (".", ["A plate of food with broccoli and rice.", "Rice, broccoli and chicken on a white plate.", "A healthy meal served on a plate.", "Dinner: chicken, rice & broccoli.", "A plate full of food."]),
    ("A cat is sleeping on a laptop keyboard.", ["A cat is sleeping on a laptop keyboard.", "A grey cat naps on top of a laptop.", "The kitten's asleep on the computer.", "A cat lying on an open laptop.", "Cat sleeping on a keyboard."]),
    ("A red double-decker bus on a city street", ["A red double-decker bus drives down the street.", "A double decker bus in London.", "A big red bus on the road.", "A two-story bus parked by the curb.", "Red bus, city street, cloudy sky."]),
    ("a a a man man", ["A man standing on a beach.", "A man stands near the ocean.", "Man on the beach at sunset.", "A guy standing by the water.", "A man looking at the waves."]),
    ("A woman holding an umbrella in the rain", ["A woman walks in the rain with an umbrella.", "Woman holding a black umbrella on a rainy day.", "A lady with an umbrella crossing the street.", "Someone's umbrella in the pouring rain.", "A woman under an umbrella."]),
    ("Three giraffes standing next to a tree.", ["Three giraffes stand near a tall tree.", "Giraffes eating leaves from a tree.", "A group of 3 giraffes in the wild.", "Three giraffes next to some trees in a field.", "Giraffes (three of them) by a tree."]),
    ("A pizza with pepperoni and cheese on a table", ["A pepperoni pizza sitting on a table.", "A large pizza with cheese and pepperoni.", "Pizza on a wooden table, ready to eat.", "A whole pizza that hasn't been cut.", "A cheese-and-pepperoni pizza."]),
    ("The kitchen has a stove, a fridge and a sink.", ["A kitchen with a stove, refrigerator and sink.", "A small kitchen with white appliances.", "The kitchen's clean and empty.", "A kitchen area with a sink and an oven.", "A modern kitchen."]),
    ("An airplane flying in the blue sky", ["A jet airplane flying through a clear blue sky.", "An airplane in the sky.", "A commercial plane in flight.", "A plane flies overhead on a sunny day.", "An airliner at 30,000 feet."]),
    ("A baseball player swinging a bat at a ball", ["A baseball player swings his bat.", "A batter hitting a ball during a game.", "A player at home plate swinging at a pitch.", "The batter's swinging at the ball.", "A baseball game in progress."]),
    ("a bowl of fruit", ["A bowl filled with apples, oranges and bananas.", "Fresh fruit in a glass bowl.", "A bowl of fruit on the counter.", "Apples & oranges in a bowl.", "A fruit bowl."]),
    ("A man and a woman can't stop laughing at a party", ["A man and woman laughing together.", "Two people laugh at a party.", "A couple sharing a laugh at a social event.", "People having fun at a party.", "A man and a woman are laughing."]),
    ("A 10-year-old boy flying a kite on the beach", ["A young boy flies a kite at the beach.", "A child with a kite by the sea.", "Boy flying a colorful kite on the sand.", "A kid's kite in the sky over the beach.", "A boy about 10 years old flying a kite."]),
    ("Horses grazing in a field near a fence.", ["Horses graze in a green pasture.", "Several horses eating grass by a fence.", "Brown horses in a field.", "Two horses grazing near a wooden fence.", "Horses in a meadow."]),
    ("A train is pulling into the station", ["A train arrives at the station.", "A passenger train pulling into a station.", "The train's coming into the platform.", "A yellow-and-blue train at a railway station.", "A train at the station."]),
    ("A bathroom with a toilet and a sink", ["A white bathroom with a toilet and sink.", "A small bathroom.", "A toilet next to a sink in a bathroom.", "The bathroom is clean and tiled.", "A bathroom with a mirror, sink and toilet."]),
    ("An elephant walking through tall grass...", ["An elephant walks through tall grass.", "A large elephant in the savanna.", "An elephant in a grassy field.", "A big grey elephant walking.", "Elephant walking in the wild."]),
    ("A skateboarder does a trick on a ramp", ["A skateboarder doing a trick on a ramp.", "A guy skateboarding at a skate park.", "A skater in mid-air above a ramp.", "A man performs a skateboard trick.", "Skateboarder jumping off a ramp."]),
    ("A stop sign at the corner of a street", ["A red stop sign on a street corner.", "A stop sign next to the road.", "Stop sign at an intersection.", "A STOP sign in front of some trees.", "A stop sign that's been vandalized."]),
    ("Two people sitting on a bench in the snow", ["Two people sit on a snowy bench.", "A couple sitting on a bench during winter.", "People on a park bench covered in snow.", "Two friends on a bench, it's snowing.", "A bench in the snow with two people."]),
    ("a laptop and a cup of coffee on a desk", ["A laptop computer and a coffee mug on a desk.", "A desk with a laptop and a cup.", "Coffee next to an open laptop.", "A workspace: laptop, coffee, notebook.", "A laptop on a wooden desk."]),
    ("A man in a suit and tie talking on a cell phone", ["A man in a suit talks on his cell phone.", "A businessman on the phone.", "A man wearing a tie and talking on a phone.", "A man's on his cellphone outside.", "A well-dressed man making a call."]),
    ("A boat", ["A small boat on a calm lake.", "A boat floating on the water.", "A fishing boat docked at a pier.", "A white boat in the harbor.", "Boats on the water."]),
    ("A group of people standing around a table with food", ["People gathered around a table of food.", "A group of friends sharing a meal.", "Several people standing near a buffet table.", "A crowd at a party with food on the table.", "Group of people around a table."]),
    ("A teddy bear sitting on a bed", ["A brown teddy bear on a bed.", "A stuffed bear sits on the pillow.", "A teddy bear on top of a bed.", "A child's teddy bear on the blanket.", "Teddy bear on a bed."]),
    ("The clock on the tower shows 3:45", ["A clock tower showing the time.", "A large clock on a tower.", "The clock says 3:45.", "A tall clock tower against a blue sky.", "A clock on the side of a building."]),
    ("A zebra standing in the dirt \"eating\" hay", ["A zebra eating hay in an enclosure.", "A zebra standing in the dirt.", "A zebra at the zoo eating.", "A black-and-white zebra feeding on hay.", "A zebra's eating some hay."]),
]


def main():
    gts = {i: [{"caption": r} for r in refs] for i, (_, refs) in enumerate(IMAGES)}
    res = {i: [{"caption": c}] for i, (c, _) in enumerate(IMAGES)}
    tok = PTBTokenizer()
    gts_t = tok.tokenize(gts)
    res_t = tok.tokenize(res)

    corpus = {}
    per_image = {i: {} for i in gts_t}
    scorers = [(Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]), (Meteor(), "METEOR"),
               (Rouge(), "ROUGE_L"), (Cider(), "CIDEr")]
    for scorer, method in scorers:
        score, scores = scorer.compute_score(gts_t, res_t)
        methods = method if isinstance(method, list) else [method]
        if not isinstance(method, list):
            score, scores = [score], [scores]
        for m, sc, scs in zip(methods, score, scores):
            corpus[m] = float(sc)
            for i, s in zip(gts_t.keys(), scs):
                per_image[i][m] = float(s)

    out = {
        "generator": "scripts/eval/make_caption_metric_fixtures.py (pycocoevalcap 1.2)",
        "corpus": corpus,
        "images": [
            {
                "candidate": c,
                "references": refs,
                "candidate_tokenized": res_t[i][0],
                "references_tokenized": gts_t[i],
                "scores": per_image[i],
            }
            for i, (c, refs) in enumerate(IMAGES)
        ],
    }
    path = os.path.join("fixtures", "eval", "captions", "captions.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {path}: {len(IMAGES)} images; corpus {corpus}")


if __name__ == "__main__":
    main()
