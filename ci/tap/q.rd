<resource schema="smatest">
  <meta name="title">stellar_ml_ages test mirror of VizieR and GAVO tables</meta>
  <meta name="description">Tables whose schemas mirror VizieR's J/ApJS/245/34/catalog
    (LAMOST DR5 DD-Payne), J/ApJS/239/32/table5 (APOKASC-2), J/ApJ/858/L7 (LAMOST
    red clump) and J/ApJS/246/9 (LAMOST SLAM giants), for the integration tests of
    stellar_ml_ages. APOKASC-2 rows are real
    when the training catalogs are available; every LAMOST row is synthetic.</meta>
  <meta name="creationDate">2026-11-24T00:00:00Z</meta>
  <meta name="subject">Stellar abundances</meta>
  <meta name="creator.name">stellar_ml_ages developers</meta>
  <meta name="content.type">Catalog</meta>

  <table id="ddpayne" onDisk="True" adql="True" mixin="//scs#q3cindex" primary="source_id">
    <meta name="description">Synthetic LAMOST DD-Payne labels (schema of J/ApJS/245/34)</meta>
    <column name="source_id" type="bigint" required="True" ucd="meta.id;meta.main" description="Source identifier"/>
    <column name="RAJ2000" type="double precision" unit="deg" ucd="pos.eq.ra;meta.main" description="Right ascension (J2000)"/>
    <column name="DEJ2000" type="double precision" unit="deg" ucd="pos.eq.dec;meta.main" description="Declination (J2000)"/>
    <column name="Teff" type="real" unit="K" ucd="phys.temperature.effective" description="Effective temperature"/>
    <column name="e_Teff" type="real" unit="K" ucd="stat.error;phys.temperature.effective" description="Teff error"/>
    <column name="logg" type="real" unit="[cm/s2]" ucd="phys.gravity" description="Surface gravity"/>
    <column name="e_logg" type="real" unit="[cm/s2]" ucd="stat.error;phys.gravity" description="log g error"/>
    <column name="quoted/[Fe/H]" type="real" unit="[-]" ucd="phys.abund.Fe" description="[Fe/H] abundance"/>
    <column name="quoted/e_[Fe/H]" type="real" unit="[-]" ucd="stat.error;phys.abund.Fe" description="[Fe/H] error"/>
    <column name="quoted/[C/Fe]" type="real" unit="[-]" ucd="phys.abund.X" description="[C/Fe] abundance"/>
    <column name="quoted/e_[C/Fe]" type="real" unit="[-]" ucd="stat.error;phys.abund.X" description="[C/Fe] error"/>
    <column name="quoted/[N/Fe]" type="real" unit="[-]" ucd="phys.abund.X" description="[N/Fe] abundance"/>
    <column name="quoted/e_[N/Fe]" type="real" unit="[-]" ucd="stat.error;phys.abund.X" description="[N/Fe] error"/>
    <column name="quoted/[O/Fe]" type="real" unit="[-]" ucd="phys.abund.X" description="[O/Fe] abundance"/>
    <column name="quoted/e_[O/Fe]" type="real" unit="[-]" ucd="stat.error;phys.abund.X" description="[O/Fe] error"/>
    <column name="quoted/[Na/Fe]" type="real" unit="[-]" ucd="phys.abund.X" description="[Na/Fe] abundance"/>
    <column name="quoted/e_[Na/Fe]" type="real" unit="[-]" ucd="stat.error;phys.abund.X" description="[Na/Fe] error"/>
    <column name="quoted/[Mg/Fe]" type="real" unit="[-]" ucd="phys.abund.X" description="[Mg/Fe] abundance"/>
    <column name="quoted/e_[Mg/Fe]" type="real" unit="[-]" ucd="stat.error;phys.abund.X" description="[Mg/Fe] error"/>
    <column name="quoted/[Ti/Fe]" type="real" unit="[-]" ucd="phys.abund.X" description="[Ti/Fe] abundance"/>
    <column name="quoted/e_[Ti/Fe]" type="real" unit="[-]" ucd="stat.error;phys.abund.X" description="[Ti/Fe] error"/>
    <column name="quoted/[Mn/Fe]" type="real" unit="[-]" ucd="phys.abund.X" description="[Mn/Fe] abundance"/>
    <column name="quoted/e_[Mn/Fe]" type="real" unit="[-]" ucd="stat.error;phys.abund.X" description="[Mn/Fe] error"/>
    <column name="quoted/[Co/Fe]" type="real" unit="[-]" ucd="phys.abund.X" description="[Co/Fe] abundance"/>
    <column name="quoted/e_[Co/Fe]" type="real" unit="[-]" ucd="stat.error;phys.abund.X" description="[Co/Fe] error"/>
    <column name="quoted/[Ba/Fe]" type="real" unit="[-]" ucd="phys.abund.X" description="[Ba/Fe] abundance"/>
    <column name="quoted/e_[Ba/Fe]" type="real" unit="[-]" ucd="stat.error;phys.abund.X" description="[Ba/Fe] error"/>
  </table>

  <table id="apokasc2" onDisk="True" adql="True" primary="KIC">
    <meta name="description">APOKASC-2 Table 5 (schema of J/ApJS/239/32/table5)</meta>
    <column name="KIC" type="integer" required="True" ucd="meta.id;meta.main" description="Kepler Input Catalog number"/>
    <column name="quoted/2MASS" type="text" ucd="meta.id.cross" description="2MASS designation"/>
    <column name="Teff" type="real" unit="K" ucd="phys.temperature.effective" description="APOGEE DR14 Teff"/>
    <column name="FeH" type="real" unit="[-]" ucd="phys.abund.Fe" description="APOGEE DR14 [Fe/H]"/>
    <column name="Numax" type="real" unit="uHz" ucd="phys.freq" description="Frequency of maximum power"/>
    <column name="Dnu" type="real" unit="uHz" ucd="phys.freq" description="Large frequency separation"/>
    <column name="ES" type="text" ucd="src.class" description="Evolutionary state"/>
    <column name="Mcor" type="real" unit="solMass" ucd="phys.mass" description="Corrected seismic mass (VizieR spells it M(cor); psycopg2 cannot bind parentheses)"/>
    <column name="LogAge" type="real" unit="[Myr]" ucd="time.age" description="log10 of age in Myr"/>
  </table>

  <table id="ting2018" onDisk="True" adql="True" mixin="//scs#q3cindex" primary="source_id">
    <meta name="description">Synthetic LAMOST red clump with Deltanu and DeltaP (labels of J/ApJ/858/L7 as code reading that table uses them)</meta>
    <column name="source_id" type="bigint" required="True" ucd="meta.id;meta.main" description="Source identifier"/>
    <column name="RAJ2000" type="double precision" unit="deg" ucd="pos.eq.ra;meta.main" description="Right ascension"/>
    <column name="DEJ2000" type="double precision" unit="deg" ucd="pos.eq.dec;meta.main" description="Declination"/>
    <column name="Deltanu" type="real" unit="uHz" ucd="phys.freq" description="Spectroscopic large frequency separation"/>
    <column name="DeltaP" type="real" unit="s" ucd="time.period" description="Spectroscopic period spacing"/>
  </table>


  <table id="slam_giants" onDisk="True" adql="True" primary="ObsID">
    <meta name="description">Synthetic LAMOST DR5 K giants with SLAM labels, named as the
      package's SLAM fetcher expects VizieR J/ApJS/246/9 to name them (the table's labels
      are unconfirmed; this mirror uses the alternative spellings RAdeg, DEdeg, [a/M] and
      has no e_[a/M], so that the fetcher's choice among spellings is exercised).</meta>
    <column name="ObsID" type="bigint" required="True" ucd="meta.id;meta.main" description="LAMOST observation identifier"/>
    <column name="RAdeg" type="double precision" unit="deg" ucd="pos.eq.ra;meta.main" description="Right ascension (J2000)"/>
    <column name="DEdeg" type="double precision" unit="deg" ucd="pos.eq.dec;meta.main" description="Declination (J2000)"/>
    <column name="Teff" type="real" unit="K" ucd="phys.temperature.effective" description="SLAM effective temperature"/>
    <column name="e_Teff" type="real" unit="K" ucd="stat.error;phys.temperature.effective" description="Teff error"/>
    <column name="logg" type="real" unit="[cm/s2]" ucd="phys.gravity" description="SLAM surface gravity"/>
    <column name="e_logg" type="real" unit="[cm/s2]" ucd="stat.error;phys.gravity" description="log g error"/>
    <column name="quoted/[M/H]" type="real" unit="[-]" ucd="phys.abund.Z" description="SLAM metallicity"/>
    <column name="quoted/e_[M/H]" type="real" unit="[-]" ucd="stat.error;phys.abund.Z" description="[M/H] error"/>
    <column name="quoted/[a/M]" type="real" unit="[-]" ucd="phys.abund" description="SLAM [alpha/M]"/>
    <column name="quoted/[C/M]" type="real" unit="[-]" ucd="phys.abund" description="SLAM [C/M]"/>
    <column name="quoted/e_[C/M]" type="real" unit="[-]" ucd="stat.error;phys.abund" description="[C/M] error"/>
    <column name="quoted/[N/M]" type="real" unit="[-]" ucd="phys.abund" description="SLAM [N/M]"/>
    <column name="quoted/e_[N/M]" type="real" unit="[-]" ucd="stat.error;phys.abund" description="[N/M] error"/>
    <column name="snrg" type="real" ucd="instr.dispersion" description="g-band signal-to-noise ratio"/>
  </table>

  <table id="slam_sources" onDisk="True" adql="True" primary="ObsID">
    <meta name="description">Positions only: a second table under the slam prefix, without labels.</meta>
    <column name="ObsID" type="bigint" required="True" ucd="meta.id;meta.main" description="LAMOST observation identifier"/>
    <column name="RAdeg" type="double precision" unit="deg" ucd="pos.eq.ra;meta.main" description="Right ascension (J2000)"/>
    <column name="DEdeg" type="double precision" unit="deg" ucd="pos.eq.dec;meta.main" description="Declination (J2000)"/>
  </table>

  <table id="survey" onDisk="True" adql="True">
    <meta name="description">Synthetic APOGEE allStar-shaped survey table for the catalog-build
      tests and benchmark: a non-unique paging key (obs_key; groups of 1-3 rows share one),
      labels, an ASPCAPFLAG bitmask. Size: STELLAR_ML_AGES_TAP_SURVEY_ROWS (default 30,000).</meta>
    <index columns="obs_key"/>
    <column name="obs_key" type="bigint" required="True" ucd="meta.id" description="Paging key (not unique)"/>
    <column name="apogee_id" type="text" ucd="meta.id;meta.main" description="Star identifier (unique)"/>
    <column name="ra" type="double precision" unit="deg" ucd="pos.eq.ra;meta.main" description="Right ascension"/>
    <column name="dec" type="double precision" unit="deg" ucd="pos.eq.dec;meta.main" description="Declination"/>
    <column name="teff" type="real" unit="K" ucd="phys.temperature.effective" description="Teff"/>
    <column name="logg" type="real" unit="[cm/s2]" ucd="phys.gravity" description="log g"/>
    <column name="fe_h" type="real" unit="[-]" ucd="phys.abund.Fe" description="[Fe/H]"/>
    <column name="alpha_m" type="real" unit="[-]" ucd="phys.abund" description="[alpha/M]"/>
    <column name="c_fe" type="real" unit="[-]" ucd="phys.abund" description="[C/Fe]"/>
    <column name="n_fe" type="real" unit="[-]" ucd="phys.abund" description="[N/Fe]"/>
    <column name="aspcapflag" type="bigint" ucd="meta.code.qual" description="ASPCAP bitmask"/>
  </table>

  <data id="import_ddpayne">
    <sources>data/ddpayne.csv</sources>
    <csvGrammar/>
    <make table="ddpayne">
      <rowmaker>
        <map key="source_id">int(@source_id)</map>
        <map key="RAJ2000">float(@ra)</map>
        <map key="DEJ2000">float(@dec)</map>
        <map key="Teff">parseWithNull(@teff, float, "")</map>
        <map key="e_Teff">parseWithNull(@e_teff, float, "")</map>
        <map key="logg">parseWithNull(@logg, float, "")</map>
        <map key="e_logg">parseWithNull(@e_logg, float, "")</map>
        <map key="quoted/[Fe/H]">parseWithNull(@fe_h, float, "")</map>
        <map key="quoted/e_[Fe/H]">parseWithNull(@e_fe_h, float, "")</map>
        <map key="quoted/[C/Fe]">parseWithNull(@c_fe, float, "")</map>
        <map key="quoted/e_[C/Fe]">parseWithNull(@e_c_fe, float, "")</map>
        <map key="quoted/[N/Fe]">parseWithNull(@n_fe, float, "")</map>
        <map key="quoted/e_[N/Fe]">parseWithNull(@e_n_fe, float, "")</map>
        <map key="quoted/[O/Fe]">parseWithNull(@o_fe, float, "")</map>
        <map key="quoted/e_[O/Fe]">parseWithNull(@e_o_fe, float, "")</map>
        <map key="quoted/[Na/Fe]">parseWithNull(@na_fe, float, "")</map>
        <map key="quoted/e_[Na/Fe]">parseWithNull(@e_na_fe, float, "")</map>
        <map key="quoted/[Mg/Fe]">parseWithNull(@mg_fe, float, "")</map>
        <map key="quoted/e_[Mg/Fe]">parseWithNull(@e_mg_fe, float, "")</map>
        <map key="quoted/[Ti/Fe]">parseWithNull(@ti_fe, float, "")</map>
        <map key="quoted/e_[Ti/Fe]">parseWithNull(@e_ti_fe, float, "")</map>
        <map key="quoted/[Mn/Fe]">parseWithNull(@mn_fe, float, "")</map>
        <map key="quoted/e_[Mn/Fe]">parseWithNull(@e_mn_fe, float, "")</map>
        <map key="quoted/[Co/Fe]">parseWithNull(@co_fe, float, "")</map>
        <map key="quoted/e_[Co/Fe]">parseWithNull(@e_co_fe, float, "")</map>
        <map key="quoted/[Ba/Fe]">parseWithNull(@ba_fe, float, "")</map>
        <map key="quoted/e_[Ba/Fe]">parseWithNull(@e_ba_fe, float, "")</map>
      </rowmaker>
    </make>
  </data>

  <data id="import_apokasc2">
    <sources>data/apokasc2.csv</sources>
    <csvGrammar/>
    <make table="apokasc2">
      <rowmaker>
        <map key="KIC">int(@kic)</map>
        <map key="quoted/2MASS">@tmass</map>
        <map key="Teff">parseWithNull(@teff, float, "")</map>
        <map key="FeH">parseWithNull(@feh, float, "")</map>
        <map key="Numax">parseWithNull(@numax, float, "")</map>
        <map key="Dnu">parseWithNull(@dnu, float, "")</map>
        <map key="ES">@es</map>
        <map key="Mcor">parseWithNull(@mass, float, "")</map>
        <map key="LogAge">parseWithNull(@logage, float, "")</map>
      </rowmaker>
    </make>
  </data>

  <data id="import_ting2018">
    <sources>data/ting2018.csv</sources>
    <csvGrammar/>
    <make table="ting2018">
      <rowmaker>
        <map key="source_id">int(@source_id)</map>
        <map key="RAJ2000">float(@ra)</map>
        <map key="DEJ2000">float(@dec)</map>
        <map key="Deltanu">parseWithNull(@dnu, float, "")</map>
        <map key="DeltaP">parseWithNull(@dpi, float, "")</map>
      </rowmaker>
    </make>
  </data>
  <data id="import_slam_giants">
    <sources>data/slam_giants.csv</sources>
    <csvGrammar/>
    <make table="slam_giants">
      <rowmaker>
        <map key="ObsID">int(@obsid)</map>
        <map key="RAdeg">float(@ra)</map>
        <map key="DEdeg">float(@dec)</map>
        <map key="Teff">parseWithNull(@teff, float, "")</map>
        <map key="e_Teff">parseWithNull(@e_teff, float, "")</map>
        <map key="logg">parseWithNull(@logg, float, "")</map>
        <map key="e_logg">parseWithNull(@e_logg, float, "")</map>
        <map key="quoted/[M/H]">parseWithNull(@m_h, float, "")</map>
        <map key="quoted/e_[M/H]">parseWithNull(@e_m_h, float, "")</map>
        <map key="quoted/[a/M]">parseWithNull(@a_m, float, "")</map>
        <map key="quoted/[C/M]">parseWithNull(@c_m, float, "")</map>
        <map key="quoted/e_[C/M]">parseWithNull(@e_c_m, float, "")</map>
        <map key="quoted/[N/M]">parseWithNull(@n_m, float, "")</map>
        <map key="quoted/e_[N/M]">parseWithNull(@e_n_m, float, "")</map>
        <map key="snrg">parseWithNull(@snrg, float, "")</map>
      </rowmaker>
    </make>
  </data>

  <data id="import_slam_sources">
    <sources>data/slam_sources.csv</sources>
    <csvGrammar/>
    <make table="slam_sources">
      <rowmaker>
        <map key="ObsID">int(@obsid)</map>
        <map key="RAdeg">float(@ra)</map>
        <map key="DEdeg">float(@dec)</map>
      </rowmaker>
    </make>
  </data>

  <data id="import_survey">
    <sources>data/survey.csv</sources>
    <csvGrammar/>
    <make table="survey">
      <rowmaker>
        <map key="obs_key">int(@obs_key)</map>
        <map key="apogee_id">@apogee_id</map>
        <map key="ra">float(@ra)</map>
        <map key="dec">float(@dec)</map>
        <map key="teff">float(@teff)</map>
        <map key="logg">float(@logg)</map>
        <map key="fe_h">float(@fe_h)</map>
        <map key="alpha_m">float(@alpha_m)</map>
        <map key="c_fe">float(@c_fe)</map>
        <map key="n_fe">float(@n_fe)</map>
        <map key="aspcapflag">int(@aspcapflag)</map>
      </rowmaker>
    </make>
  </data>
</resource>
