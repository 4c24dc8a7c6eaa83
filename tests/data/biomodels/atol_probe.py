#!/usr/bin/env python3
"""libRoadRunner's per-state absolute tolerances for the probe document of medtwin's unit test
`sim::tests::absolute_tolerances_scale_as_libroadrunner` (crates/sbml/src/sim.rs).

    pip install libroadrunner && python3 atol_probe.py

libroadrunner 2.10.0 prints A 1e-10, B 5e-12, E 1e-15, F 5e-16, G 1e-12, p 1e-10, q 1e-12: the scalar
tolerance times the initial amount (species) or value (rate-rule variables), or, for a species
starting at 0, times its compartment's size (size 0: unscaled); no cap.
"""
import roadrunner

DOC = """<sbml xmlns="http://www.sbml.org/sbml/level3/version1/core" level="3" version="1">
<model id="m"><listOfCompartments>
 <compartment id="C" size="5" constant="true" spatialDimensions="3"/>
 <compartment id="D" size="1e-3" constant="true" spatialDimensions="3"/>
 <compartment id="Z" size="0" constant="true" spatialDimensions="3"/></listOfCompartments>
<listOfSpecies>
 <species id="A" compartment="C" initialConcentration="20" hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
 <species id="B" compartment="C" initialConcentration="0" hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
 <species id="E" compartment="D" initialConcentration="0" hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
 <species id="F" compartment="D" initialConcentration="0.5" hasOnlySubstanceUnits="false" boundaryCondition="false" constant="false"/>
 <species id="G" compartment="Z" initialAmount="0" hasOnlySubstanceUnits="true" boundaryCondition="false" constant="false"/></listOfSpecies>
<listOfParameters><parameter id="p" value="100" constant="false"/><parameter id="q" value="0" constant="false"/>
 <parameter id="k" value="1" constant="true"/></listOfParameters>
<listOfRules><rateRule variable="p"><math xmlns="http://www.w3.org/1998/Math/MathML"><cn>1</cn></math></rateRule>
 <rateRule variable="q"><math xmlns="http://www.w3.org/1998/Math/MathML"><cn>1</cn></math></rateRule></listOfRules>
<listOfReactions><reaction id="r" reversible="false">
 <listOfReactants><speciesReference species="A" stoichiometry="1" constant="true"/></listOfReactants>
 <listOfProducts><speciesReference species="B" stoichiometry="1" constant="true"/><speciesReference species="E" stoichiometry="1" constant="true"/><speciesReference species="F" stoichiometry="1" constant="true"/><speciesReference species="G" stoichiometry="1" constant="true"/></listOfProducts>
 <kineticLaw><math xmlns="http://www.w3.org/1998/Math/MathML"><apply><times/><ci>k</ci><ci>A</ci></apply></math></kineticLaw>
</reaction></listOfReactions></model></sbml>"""

r = roadrunner.RoadRunner(DOC)
r.integrator.absolute_tolerance = 1e-12
v = list(r.integrator.getAbsoluteToleranceVector())
# The vector holds the floating species first (document order), then rate-rule variables.
ids = list(r.model.getFloatingSpeciesIds()) + ["p", "q"]
print(f"libroadrunner {roadrunner.__version__}, absolute_tolerance 1e-12")
for i, x in zip(ids, v):
    print(i, f"{x:.6g}")
