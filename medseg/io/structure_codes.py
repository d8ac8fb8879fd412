"""SNOMED CT codes and display colours of the structures medseg segments, for DICOM SEG and RTSTRUCT.

:func:`structure_code` turns a label name (``liver``, ``kidney_left``,
``lung_upper_lobe_right``, ``vertebrae_L3``, ``nucleus`` ...) into the
Segmented Property Category and Type codes of a DICOM SEG segment (PS3.16
CID 7150 / 7151), a laterality modifier (``left``/``right`` words, plural
``lungs``/``kidneys`` for both sides) and a recommended display colour. Names
are matched case-insensitively with any of ``_ -.`` between words. A name not
in the table gets the explicit "unknown" code (category Tissue, type SCT
261665006 "Unknown") and a palette colour, never a guessed organ.

Every code is a :data:`pydicom.sr.codedict.codes` SNOMED CT concept (the test
suite checks each keyword resolves), so values and meanings come from the
DICOM standard's tables, not from memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

RGB = tuple[int, int, int]

# category letter -> CID 7150 concept
_CATEGORIES = {"A": "AnatomicalStructure", "T": "Tissue", "M": "MorphologicallyAbnormalStructure"}
_BONE, _VEIN, _ARTERY = (241, 214, 145), (0, 151, 206), (216, 101, 79)

# normalised name -> (SCT type keyword, category letter, display colour RGB)
STRUCTURES: dict[str, tuple[str, str, RGB]] = {
    # abdominal and thoracic organs
    "liver": ("Liver", "A", (221, 130, 101)),
    "spleen": ("Spleen", "A", (157, 108, 162)),
    "kidney": ("Kidney", "A", (185, 102, 83)),
    "gallbladder": ("Gallbladder", "A", (139, 150, 98)),
    "stomach": ("Stomach", "A", (216, 132, 105)),
    "pancreas": ("Pancreas", "A", (249, 180, 111)),
    "adrenal_gland": ("AdrenalGland", "A", (220, 170, 120)),
    "esophagus": ("Esophagus", "A", (211, 171, 143)),
    "trachea": ("Trachea", "A", (182, 228, 255)),
    "bronchus": ("Bronchus", "A", (152, 208, 235)),
    "thyroid": ("Thyroid", "A", (220, 160, 30)),
    "small_intestine": ("SmallIntestine", "A", (205, 167, 142)),
    "duodenum": ("Duodenum", "A", (255, 253, 229)),
    "colon": ("Colon", "A", (204, 168, 143)),
    "large_intestine": ("LargeIntestine", "A", (204, 168, 143)),
    "rectum": ("Rectum", "A", (224, 128, 112)),
    "appendix": ("Appendix", "A", (200, 150, 130)),
    "bladder": ("Bladder", "A", (222, 154, 132)),
    "ureter": ("Ureter", "A", (218, 155, 120)),
    "prostate": ("Prostate", "A", (230, 158, 140)),
    "uterus": ("Uterus", "A", (220, 120, 130)),
    "breast": ("Breast", "A", (255, 205, 190)),
    "brain": ("Brain", "A", (250, 250, 225)),
    "spinal_cord": ("SpinalCord", "A", (244, 214, 49)),
    "eye": ("Eye", "A", (194, 186, 204)),
    "lymph_node": ("LymphNode", "A", (68, 172, 100)),
    # lungs
    "lung": ("Lung", "A", (197, 165, 145)),
    "lung_upper_lobe": ("UpperLobeOfLung", "A", (172, 138, 115)),
    "lung_middle_lobe": ("MiddleLobeOfRightLung", "A", (202, 164, 140)),
    "lung_lower_lobe": ("LowerLobeOfLung", "A", (224, 186, 162)),
    "pleura": ("Pleura", "A", (230, 200, 180)),
    # heart and vessels
    "heart": ("Heart", "A", (206, 110, 84)),
    "atrium": ("Atrium", "A", (210, 115, 89)),
    "left_atrium": ("LeftAtrium", "A", (210, 115, 89)),
    "right_atrium": ("RightAtrium", "A", (210, 115, 89)),
    "left_ventricle": ("LeftVentricle", "A", (206, 110, 84)),
    "right_ventricle": ("RightVentricle", "A", (206, 110, 84)),
    "aorta": ("Aorta", "A", (224, 97, 76)),
    "pulmonary_artery": ("PulmonaryArtery", "A", (0, 122, 171)),
    "pulmonary_vein": ("PulmonaryVein", "A", _VEIN),
    "inferior_vena_cava": ("InferiorVenaCava", "A", _VEIN),
    "superior_vena_cava": ("SuperiorVenaCava", "A", _VEIN),
    "portal_vein": ("PortalVein", "A", _VEIN),
    "splenic_vein": ("SplenicVein", "A", _VEIN),
    "hepatic_vein": ("HepaticVein", "A", _VEIN),
    "iliac_artery": ("CommonIliacArtery", "A", _ARTERY),
    "iliac_vein": ("CommonIliacVein", "A", _VEIN),
    "brachiocephalic_vein": ("BrachiocephalicVein", "A", _VEIN),
    "brachiocephalic_trunk": ("BrachiocephalicTrunk", "A", _ARTERY),
    "subclavian_artery": ("SubclavianArtery", "A", _ARTERY),
    "common_carotid_artery": ("CommonCarotidArtery", "A", _ARTERY),
    "coronary_artery": ("CoronaryArtery", "A", _ARTERY),
    "artery": ("Artery", "A", _ARTERY),
    "vein": ("Vein", "A", _VEIN),
    "blood_vessel": ("BloodVessel", "A", (220, 80, 80)),
    # bones
    "bone": ("Bone", "A", _BONE),
    "spine": ("Spine", "A", _BONE),
    "vertebra": ("Vertebra", "A", _BONE),
    "sacrum": ("Sacrum", "A", _BONE),
    "rib": ("Rib", "A", _BONE),
    "sternum": ("Sternum", "A", _BONE),
    "costal_cartilage": ("CostalCartilage", "A", (111, 184, 210)),
    "femur": ("Femur", "A", _BONE),
    "humerus": ("Humerus", "A", _BONE),
    "scapula": ("Scapula", "A", _BONE),
    "clavicle": ("Clavicle", "A", _BONE),
    "ilium": ("Ilium", "A", _BONE),
    "skull": ("Skull", "A", _BONE),
    # soft tissue
    "muscle": ("Muscle", "T", (192, 104, 88)),
    "skeletal_muscle": ("SkeletalMuscle", "T", (192, 104, 88)),
    "fat": ("Fat", "T", (230, 220, 70)),
    "subcutaneous_tissue": ("SubcutaneousTissue", "T", (230, 220, 70)),
    "skin": ("Skin", "T", (177, 122, 101)),
    # cells
    "nucleus": ("Nucleus", "A", (72, 96, 210)),
    "cell": ("Cell", "A", (170, 130, 200)),
    # findings
    "tumor": ("Tumor", "M", (255, 40, 40)),
    "lesion": ("Lesion", "M", (255, 80, 40)),
    "cyst": ("Cyst", "M", (120, 200, 255)),
    "nodule": ("Nodule", "M", (255, 120, 60)),
    "mass": ("Mass", "M", (255, 60, 90)),
    "metastasis": ("Metastasis", "M", (255, 0, 120)),
    "effusion": ("Effusion", "M", (130, 190, 240)),
    "hemorrhage": ("Hemorrhage", "M", (180, 20, 20)),
}
# other spellings -> table name
ALIASES: dict[str, str] = {
    "lungs": "lung", "kidneys": "kidney", "adrenal": "adrenal_gland", "thyroid_gland": "thyroid",
    "small_bowel": "small_intestine", "urinary_bladder": "bladder", "oesophagus": "esophagus",
    "gall_bladder": "gallbladder", "upper_lobe": "lung_upper_lobe", "middle_lobe": "lung_middle_lobe",
    "lower_lobe": "lung_lower_lobe", "ivc": "inferior_vena_cava", "svc": "superior_vena_cava",
    "portal_vein_and_splenic_vein": "portal_vein", "iliac_vena": "iliac_vein", "common_iliac_artery": "iliac_artery",
    "common_iliac_vein": "iliac_vein", "vessel": "blood_vessel", "vessels": "blood_vessel", "vertebrae": "vertebra",
    "vertebral_column": "spine", "clavicula": "clavicle", "costal_cartilages": "costal_cartilage", "ribs": "rib",
    "muscles": "muscle", "nuclei": "nucleus", "cell_nucleus": "nucleus", "cells": "cell", "tumour": "tumor",
    "neoplasm": "tumor", "lesions": "lesion", "cysts": "cyst", "nodules": "nodule", "subcutaneous_fat": "subcutaneous_tissue",
    "adipose_tissue": "fat", "kidney_cyst": "cyst", "heart_atrium_left": "left_atrium", "heart_atrium_right": "right_atrium",
    "heart_ventricle_left": "left_ventricle", "heart_ventricle_right": "right_ventricle",
    # named skeletal muscles and the hip bone, by their kind
    "gluteus_maximus": "skeletal_muscle", "gluteus_medius": "skeletal_muscle", "gluteus_minimus": "skeletal_muscle",
    "iliopsoas": "skeletal_muscle", "autochthon": "skeletal_muscle", "hip": "bone",
}
_BOTH_SIDES = {"lungs", "kidneys"}
_LATERALITY = {"left": "Left", "l": "Left", "right": "Right", "r": "Right"}
_VERTEBRA = re.compile(r"^vertebrae?_?([ctl])(\d{1,2})$")
_VERTEBRA_COUNT = {"c": 7, "t": 12, "l": 5}
_NUMBERED = re.compile(r"^(rib|vertebrae?|cyst|lesion|nodule|tumor|tumour|lymph_node)_?[a-z]?\d+$")
UNKNOWN_CATEGORY, UNKNOWN_TYPE = codes.SCT.Tissue, codes.SCT.Unknown


@dataclass(frozen=True)
class StructureCode:
    """How a label is described in DICOM: SEG category/type codes, laterality, colour.

    ``known`` is False for names outside the table (the "unknown" type code).
    """

    category: Code
    type: Code
    modifier: Code | None
    rgb: RGB
    known: bool


def normalise(name: str) -> str:
    """Lower case, words joined by ``_`` (``"Kidney Left"`` -> ``"kidney_left"``)."""
    return "_".join(re.findall(r"[a-z0-9]+", name.lower()))


def palette_colour(value: int) -> RGB:
    """A distinct colour for label ``value`` (golden-angle hues at fixed saturation and value)."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((value * 0.618034) % 1.0, 0.65, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _entry(key: str) -> tuple[str, str, RGB] | None:
    key = ALIASES.get(key, key)
    if key in STRUCTURES:
        return STRUCTURES[key]
    if (match := _VERTEBRA.match(key)) and 1 <= int(match[2]) <= _VERTEBRA_COUNT[match[1]]:
        return f"{match[1].upper()}{int(match[2])}Vertebra", "A", _BONE
    if match := _NUMBERED.match(key):
        return _entry(match[1])
    return None


def structure_code(name: str, value: int = 1) -> StructureCode:
    """The DICOM description of a structure called ``name`` (label ``value`` picks an unknown one's colour).

    Examples
    --------
    >>> c = structure_code("kidney_left")
    >>> c.type.value, c.type.meaning, c.modifier.meaning
    ('64033007', 'Kidney', 'Left')
    >>> structure_code("dense").type.meaning
    'Unknown'
    """
    key = normalise(name)
    words = key.split("_")
    sides = {_LATERALITY[w] for w in words if w in _LATERALITY}
    core = "_".join(w for w in words if w not in _LATERALITY)
    entry = _entry(key) or _entry(core)
    if entry is None:
        return StructureCode(UNKNOWN_CATEGORY, UNKNOWN_TYPE, None, palette_colour(value), False)
    type_kw, category, rgb = entry
    modifier = None
    if key in _BOTH_SIDES or len(sides) > 1:
        modifier = codes.SCT.RightAndLeft
    elif sides and not type_kw.startswith(tuple(sides)):  # LeftAtrium carries its side already
        modifier = getattr(codes.SCT, sides.pop())
    return StructureCode(getattr(codes.SCT, _CATEGORIES[category]), getattr(codes.SCT, type_kw), modifier, rgb, True)


__all__ = ["ALIASES", "STRUCTURES", "StructureCode", "normalise", "palette_colour", "structure_code"]
